"""The foundation (``portrait``) imports nothing above it, and its modules import each other
without a circle (issue 14 §4).

Every ``import`` in every module of ``portrait/`` counts, wherever it is written: at the top,
inside a function, under ``if TYPE_CHECKING:``. For the circle check an import made only for
type checking is left out: it never runs, so it cannot close a circle at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = "portrait"
# The packages above the foundation, and the command package above them all.
HIGHER = ("features", "models", "training", "marketing", "serving", "portrait_cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / FOUNDATION).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, int, bool]]:
    """``(imported name, line, type checking only)`` for every import in ``source``, the text of
    ``module``. ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a module); a relative
    import is resolved against ``module``."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, typing_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno, typing_only))
            found.extend((f"{target}.{alias.name}", node.lineno, typing_only) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(tree, False)
    return found


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """Every import of a higher package by a foundation module, as ``module:line: name``."""
    bad = []
    for module, path in modules.items():
        for name, line, _ in imports(path.read_text(), module, path.name == "__init__.py"):
            if _top(name) in HIGHER:
                bad.append(f"{module}:{line}: imports {name}")
    return bad


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the foundation modules it imports when it runs (type-checking imports left out;
    ``from portrait import contract`` is an edge to ``portrait.contract``)."""
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for name, _, typing_only in imports(path.read_text(), module, path.name == "__init__.py"):
            if typing_only or _top(name) != FOUNDATION:
                continue
            # The longest prefix that is a module: "portrait.dataset.Dataset" -> "portrait.dataset".
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            # A package's __init__ runs before its modules; an edge to it alone says nothing here.
            if target and target != module and target != FOUNDATION:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected components of two or more modules
    (or a module importing itself), each as a sorted list (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_foundation_imports_no_higher_package():
    modules = _modules()
    assert "portrait.dataset" in modules and "portrait.engine" in modules and "portrait.spark_engine" in modules
    upward = upward_imports(modules)
    assert not upward, "the foundation imports a higher package:\n" + "\n".join(upward)


def test_the_foundation_modules_import_each_other_without_a_circle():
    circles = cycles(import_graph(_modules()))
    assert not circles, "modules of portrait import each other in a circle: " + "; ".join(map(" <-> ".join, circles))


def test_the_checks_see_imports_inside_functions_and_type_checking_blocks(tmp_path):
    """What the two tests above would catch: a higher import inside a function or a
    TYPE_CHECKING block, a relative one, and a circle closed by an import inside a function."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from serving.score import score\n"
        "def f():\n    from marketing import manual\n    import training.cli\n"
        "    from .dataset import Dataset\n"
    )
    names = {(name, typing_only) for name, _, typing_only in imports(source, "portrait.views")}
    assert ("serving.score", True) in names and ("marketing.manual", False) in names
    assert ("training.cli", False) in names and ("portrait.dataset.Dataset", False) in names

    package = tmp_path / "portrait"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from portrait import b\n")
    (package / "b.py").write_text("def g():\n    from portrait.a import thing\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from portrait.a import A\n")
    (package / "d.py").write_text("def h():\n    import portrait_cli.main\n")
    planted = {f"portrait.{p.stem}": p for p in package.glob("*.py") if p.stem != "__init__"}
    assert cycles(import_graph(planted)) == [["portrait.a", "portrait.b"]]
    assert upward_imports(planted) == ["portrait.d:2: imports portrait_cli.main"]


def test_the_command_starts_without_the_model_libraries():
    """`portrait --help` starts without MLflow, Optuna, LightGBM or scikit-learn (every command
    registers the same way, and imports them only when it runs): MLflow alone took 1.8 of the
    2.7 s every command needed to start when registering the training commands imported it."""
    import subprocess
    import sys

    probe = (
        "import sys, contextlib, io\n"
        "from portrait_cli.main import main\n"
        "sys.argv = ['portrait', '--help']\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main()\n"
        "heavy = ('mlflow', 'optuna', 'lightgbm', 'sklearn')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
