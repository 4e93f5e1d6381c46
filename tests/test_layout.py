"""The shape of the code, checked: folders whose imports run one way, short functions and modules, a
thin launcher, and sizes in code tokens, which layout cannot change.

The graph is read from the source (``ast``), not by importing: an edge A -> B for each
``import dcgan_jax.B`` / ``from dcgan_jax import B`` / ``from dcgan_jax.B import x`` in module A,
named by its folder: ``gan``, ``evaluation``, ``run``, ``tools``, and the commands (``__main__.py``
files and launch.py) on top. The package's ``__init__`` (its face) is left out.
"""

import ast
import io
import tokenize
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "dcgan_jax"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_POSITIONAL_ARGUMENTS = 5
MAX_GAN_MODULES = 12
# Code tokens (tokenize, less comments, docstrings and layout tokens) of launch.py plus dcgan_jax/,
# and of the GAN folder. A ratchet: issue 37's targets are 42,000 (not met) and 15,000 (met); lower
# these as code goes. benchmarks/code_size.md lists every raise and what it paid for.
MAX_TOKENS = 48_062
MAX_GAN_TOKENS = 14_983
# What each folder may import of dcgan_jax besides itself: the GAN nothing, evaluation the GAN, the
# harness both, tools all three. Commands may import anything.
MAY_IMPORT = {
    "gan": set(),
    "evaluation": {"gan"},
    "run": {"gan", "evaluation"},
    "tools": {"gan", "evaluation", "run"},
}
FOLDERS = set(MAY_IMPORT) | {"analysis", "classifier", "sweep", "assets"}  # The last: commands.


def _layer(path: Path) -> str:
    """``gan``, ``evaluation``, ``run``, ``tools``, or ``command`` for a ``__main__.py`` or a
    command folder's ``__init__.py``."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if parts[0] in MAY_IMPORT and path.name != "__main__.py" else "command"


def _imported(node: ast.AST) -> set[str]:
    """The folders of dcgan_jax that one import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module]
        if node.module == "dcgan_jax":
            names = [f"dcgan_jax.{alias.name}" for alias in node.names]
    else:
        return set()
    return {name.split(".")[1] for name in names if name.startswith("dcgan_jax.")}


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def code_tokens(path: Path) -> int:
    """Python tokens of code: no comments, docstrings, NEWLINE, NL, INDENT, DEDENT or ENDMARKER."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    docstrings.add((first.lineno, first.col_offset))
    layout = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    layout |= {tokenize.ENDMARKER, tokenize.ENCODING}
    count = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        is_docstring = token.type == tokenize.STRING and token.start in docstrings
        count += token.type not in layout and not is_docstring
    return count


def test_imports_run_one_way_between_the_folders():
    wrong = []
    for path in _sources():
        layer = _layer(path)
        if layer == "command":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for folder in _imported(node) - {layer} - MAY_IMPORT[layer]:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports dcgan_jax.{folder}")
    assert not wrong, wrong


def test_the_direction_check_sees_an_upward_import():
    """The check itself: the GAN importing the harness is named; a command may import anything."""
    upward = ast.parse("from dcgan_jax.run import checkpoints").body[0]
    assert _imported(upward) - MAY_IMPORT["gan"] == {"run"}
    assert _imported(ast.parse("from dcgan_jax import evaluation").body[0]) == {"evaluation"}
    assert _layer(PACKAGE / "evaluation" / "__main__.py") == "command"


def test_the_package_is_four_folders_and_commands_and_the_gan_a_few_modules():
    top = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert top == FOLDERS | {"__init__.py"}, top
    gan_modules = [p for p in (PACKAGE / "gan").glob("*.py") if p.name != "__init__.py"]
    assert len(gan_modules) <= MAX_GAN_MODULES, gan_modules
    for folder in MAY_IMPORT:
        assert ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))


def test_no_import_of_the_package_inside_a_function():
    """Nested imports hide the graph; only optional heavy libraries (TFDS, matplotlib, PIL) may be
    imported late, and those are not ours."""
    late = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if _imported(node) and id(node) not in top_level:
                late.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not late, late


def test_no_function_is_over_sixty_lines_and_the_launcher_is_thin():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    where = f"{path.relative_to(REPO)}:{node.lineno}"
                    long.append(f"{where} {node.name} ({lines} lines)")
    assert not long, long
    assert len((REPO / "launch.py").read_text().splitlines()) < 90


def test_no_module_is_over_four_hundred_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in _sources()}
    assert not {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES}, sizes


def test_the_code_keeps_its_token_budget():
    files = [REPO / "launch.py", *PACKAGE.rglob("*.py")]
    total = sum(code_tokens(path) for path in files)
    gan = sum(code_tokens(path) for path in (PACKAGE / "gan").glob("*.py"))
    assert total <= MAX_TOKENS, f"launch.py and dcgan_jax/: {total} code tokens, over {MAX_TOKENS}"
    assert gan <= MAX_GAN_TOKENS, f"dcgan_jax/gan/: {gan} code tokens, over {MAX_GAN_TOKENS}"


def test_the_token_count_ignores_layout_comments_and_docstrings(tmp_path):
    """The measure itself: the same code, laid out, commented and documented, counts the same."""
    compact = tmp_path / "compact.py"
    compact.write_text("def f(a, b):\n    return a + b\n")
    spread = tmp_path / "spread.py"
    spread.write_text('def f(\n    a,  # one\n    b,\n):\n    """Adds."""\n\n    return (a\n+ b)\n')
    assert code_tokens(compact) == code_tokens(spread) - 3  # The trailing comma and two brackets.


def _own_callables(trees: list[ast.AST]) -> set[str]:
    """Names of the package's functions and classes that take no ``*args``: a call to one fills
    named parameters (a call to ``reshape`` or ``logging.info`` passes a variable list instead)."""
    names, variadic = set(), set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names.add(node.name)
                if isinstance(node, ast.FunctionDef) and node.args.vararg:
                    variadic.add(node.name)
    return names - variadic


def test_no_noqa_and_no_call_fills_many_parameters_by_position():
    """Rules that compaction cannot meet: no ``# noqa``, and no call of ours filling more than five
    parameters by position or by splatting a sequence."""
    paths = [REPO / "launch.py", *_sources()]
    trees = [ast.parse(path.read_text()) for path in paths]
    own = _own_callables(trees)
    found = []
    for path, tree in zip(paths, trees, strict=True):
        found += [
            f"{path.name}: noqa" for line in path.read_text().splitlines() if "# noqa" in line
        ]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            starred = any(isinstance(arg, ast.Starred) for arg in node.args)
            if name in own and (starred or len(node.args) > MAX_POSITIONAL_ARGUMENTS):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not found, found
