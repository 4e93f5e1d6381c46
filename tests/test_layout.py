"""The shape of the code, checked: a shallow one-way import graph, short functions, a thin launcher.

The graph is read from the source (``ast``), not by importing: an edge A -> B for
each top-level ``import dcgan_jax.B`` / ``from dcgan_jax import B`` /
``from dcgan_jax.B import x`` in module A. The package's ``__init__`` (the public
facade) is left out; a sub-package counts as one module, its ``__main__`` (a
command) as another.
"""

import ast
import functools
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "dcgan_jax"
MAX_DEPTH = 6
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_PACKAGE_LINES = 5600  # Issue 32: what a newcomer reads; removals pay for what is added.


def _module_name(path: Path) -> str:
    """``step``; ``evaluation`` for a sub-package; ``evaluation.__main__`` for its command, which
    sits on top of the graph like launch.py."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if parts[-1] == "__init__" else ".".join(parts)


def _modules() -> dict[str, list[Path]]:
    modules: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != PACKAGE / "__init__.py":
            modules.setdefault(_module_name(path), []).append(path)
    return modules


def _imported(node: ast.AST, known: set[str]) -> set[str]:
    """The package's modules that one import statement names."""
    names = set()
    if isinstance(node, ast.Import):
        names = {
            alias.name.split(".")[1] for alias in node.names if alias.name.startswith("dcgan_jax.")
        }
    elif (
        isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.split(".")[0] == "dcgan_jax"
    ):
        if node.module == "dcgan_jax":
            names = {alias.name for alias in node.names}
        else:  # A sub-package's own module (evaluation.inception) counts as itself.
            package = node.module.split(".")[1]
            names = {
                f"{package}.{a.name}" if f"{package}.{a.name}" in known else package
                for a in node.names
            }
    return names & known


def _graph(top_level_only: bool = True) -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, paths in modules.items():
        edges = set()
        for path in paths:
            tree = ast.parse(path.read_text())
            nodes = tree.body if top_level_only else ast.walk(tree)
            for node in nodes:
                edges |= _imported(node, set(modules))
        graph[name] = edges - {name}
    return graph


def _depth(graph: dict[str, set[str]]) -> dict[str, int]:
    @functools.cache
    def depth(name: str) -> int:
        return 1 + max((depth(dep) for dep in graph[name]), default=0)

    return {name: depth(name) for name in graph}


def test_import_graph_is_at_most_six_levels_deep_and_config_imports_nothing_of_ours():
    graph = _graph()
    depths = _depth(graph)
    deepest = max(depths, key=depths.get)
    print({name: depths[name] for name in sorted(depths, key=depths.get)})
    launch_imports = set().union(
        *(_imported(n, set(graph)) for n in ast.parse((REPO / "launch.py").read_text()).body)
    )
    launch_depth = 1 + max(depths[name] for name in launch_imports)
    assert depths[deepest] <= MAX_DEPTH and launch_depth <= MAX_DEPTH, (
        deepest,
        depths[deepest],
        launch_depth,
    )
    assert graph["config"] == set()
    assert "analysis" not in graph["evaluation"]


def test_no_import_of_the_package_inside_a_function():
    """Nested imports hide the graph; only optional heavy libraries (TFDS, matplotlib, PIL) may be
    imported late, and those are not ours."""
    everywhere, top_level = _graph(top_level_only=False), _graph()
    assert everywhere == top_level


def test_no_function_is_over_sixty_lines_and_the_launcher_is_thin():
    long = []
    for paths in _modules().values():
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(
                            f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)"
                        )
    assert not long, long
    assert len((REPO / "launch.py").read_text().splitlines()) < 60


def test_no_module_is_over_four_hundred_lines_and_the_package_keeps_its_budget():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert not {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES}, sizes
    total = sum(sizes.values()) + len((REPO / "launch.py").read_text().splitlines())
    assert total <= MAX_PACKAGE_LINES, (
        f"dcgan_jax/ and launch.py: {total} lines, over {MAX_PACKAGE_LINES}"
    )


def test_the_depth_measure_sees_a_chain():
    """The measure itself: a chain a -> b -> c is three levels, and a cycle-free fan-out one more
    than its leaves."""
    assert _depth({"a": {"b"}, "b": {"c"}, "c": set()}) == {"a": 3, "b": 2, "c": 1}
    assert _depth({"top": {"x", "y"}, "x": set(), "y": {"x"}})["top"] == 3
