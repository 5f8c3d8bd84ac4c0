"""The package's layering (issue 19 item 5), read from the source's imports (every ``import``, at module level
or inside a function, since a lazy import is a dependency too):

- no import cycle among the modules of ``agegender/``;
- the library ``agegender/`` imports neither the applications (``reproductions/``) nor the tables (``results/``);
- the data modules do not import the face generator ``agegender.data.synth`` (only the command line that
  generates faces does), and the file check ``agegender.data.images`` imports nothing else of the package.

Each rule is checked on the real tree and, so that it can fail, on a small handmade tree that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = "agegender.data.synth"
GENERATOR_MODULES = {GENERATOR, "agegender.data.synth_faces"}  # the generator and its face drawing
# the data module that may import the face generator: the command line that generates faces
# (``python -m agegender.data synth``); outside agegender.data, the benchmarks and export's self-check draw faces
MAY_IMPORT_GENERATOR = {"agegender.data.__main__"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str) -> set[str]:
    """Every module name ``path`` imports (absolute and relative, at any depth), as written."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def import_graph(root: Path, package: str = "agegender") -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every module under ``root/package``."""
    modules = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for target in imports(path, name):
            while target and target not in modules:  # ``from agegender.data import x``: the module x, else data
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def external_imports(root: Path, package: str = "agegender") -> dict[str, set[str]]:
    """``{module: top-level names it imports}`` (``reproductions``, ``results``, ``numpy`` ...)."""
    return {module_name(p, root): {n.split(".")[0] for n in imports(p, module_name(p, root)) if n}
            for p in sorted((root / package).rglob("*.py"))}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
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
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def generator_users(graph: dict[str, set[str]]) -> set[str]:
    """The data modules (``agegender.data.*``) that import the face generator, bar the command line."""
    return {m for m, edges in graph.items() if GENERATOR_MODULES & set(edges) and m.startswith("agegender.data.")
            and m not in MAY_IMPORT_GENERATOR | GENERATOR_MODULES}


def application_users(root: Path) -> dict[str, set[str]]:
    return {m: names & {"reproductions", "results"} for m, names in external_imports(root).items()
            if names & {"reproductions", "results"}}


# ---------------------------------------------------------------------------------------------- the real tree


# Known cycles, each to be split; equality (not a subset) makes the test fail once one is fixed, so the list shrinks.
# (issue 20's GPU kit command and builder imported each other; both now take the models from agegender.gpu_kit_models)
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycle_in_the_library():
    graph = import_graph(ROOT)
    assert cycles(graph) == [c for c in KNOWN_CYCLES if all(m in graph for m in c)]


def test_the_library_imports_neither_reproductions_nor_results():
    assert application_users(ROOT) == {}


def test_data_modules_do_not_import_the_face_generator():
    assert generator_users(import_graph(ROOT)) == set()


def test_the_file_check_imports_nothing_of_the_package():
    graph = import_graph(ROOT)
    assert graph["agegender.data.images"] == set()
    assert "agegender.data.images" in graph["agegender.data.pipeline"]


# ---------------------------------------------------------------------------------------------- the checks can fail


@pytest.fixture
def broken_tree(tmp_path):
    """A package with a cycle through a lazy import, an application import and a data module using the generator."""
    files = {
        "agegender/__init__.py": "",
        "agegender/a.py": "from agegender import b\n",
        "agegender/b.py": "def f():\n    from agegender.c import g\n",
        "agegender/c.py": "from . import a\n\ndef g():\n    pass\n",
        "agegender/demo.py": "def run():\n    import reproductions.x\n    from results.tables import generate\n",
        "agegender/data/__init__.py": "",
        "agegender/data/synth.py": "",
        "agegender/data/reader.py": "def attributes():\n    from agegender.data.synth import NAMES\n",
        "agegender/data/synth_faces.py": "",
        "agegender/data/pack.py": "from agegender.data.synth_faces import draw_face\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_find_what_breaks_the_layering(broken_tree):
    graph = import_graph(broken_tree)
    assert cycles(graph) == [["agegender.a", "agegender.b", "agegender.c"]]  # c -> a is a relative import
    assert application_users(broken_tree) == {"agegender.demo": {"reproductions", "results"}}
    assert generator_users(graph) == {"agegender.data.reader", "agegender.data.pack"}
