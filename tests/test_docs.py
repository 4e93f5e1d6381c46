"""The README is a front door to docs/*.md: every relative link in them leads to a file that
exists."""

import re

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(page):
    targets = [t.split("#")[0] for t in LINK.findall(page.read_text())]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    missing = [t for t in _relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"


def test_the_readme_links_every_docs_page():
    linked = {(REPO / t).resolve() for t in _relative_links(REPO / "README.md")}
    assert {p.resolve() for p in PAGES[1:]} <= linked
    assert len(PAGES) > 5  # The reference pages exist: configuration, model, evaluation, ...


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [web](https://example.org) [gone](nowhere.md#part)")
    assert [t for t in _relative_links(page) if not (page.parent / t).exists()] == ["nowhere.md"]
