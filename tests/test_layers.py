"""The package's floors: no import cycle, and no import from a lower floor to a higher one.

The import graph of ``src/segattn`` is read from the source (``ast``), not by importing it: every
``import segattn...``, ``from segattn... import ...`` and relative import, at module level *and* inside
functions, classes and ``if`` blocks, is an edge from the importing file to the imported module
(``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``). Third-party
imports (optional or not) are not edges. The parent packages that Python runs on the way to a module
(``import segattn.models.heads`` also runs ``segattn/__init__.py``) are not edges either: a package's
``__init__`` re-exporting its own files would otherwise make every package a cycle.

Checked:

- every file of the package has a floor (``FLOORS`` below; the same table is drawn in
  ``docs/development.md``, and the two must agree);
- no file imports a module on a higher floor;
- no import cycle between files, and none between packages (``engine`` <-> ``export`` would be one
  even if no two files formed a circle);
- ``PENDING`` lists the violations other branches of this round remove; each is tolerated until it is
  gone, and then this test fails until its entry is deleted, so the list cannot outlive its reason.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "development.md"

# Floors, low -> high. An entry is a path under src/segattn without ".py" ("data" is the package,
# "*/cli" any subpackage's cli.py, "__init__" the top-level package). A file takes the floor of the
# first entry that names it exactly or by pattern, else the floor of its first path component.
FLOORS: Dict[int, Tuple[str, ...]] = {
    0: ("errors", "checks", "io", "progress", "registry", "stats"),
    1: ("ops", "layers", "data", "checkpoints"),
    2: ("modules", "lowrank"),
    3: ("models",),
    4: ("convert", "engine", "export", "bench"),
    5: ("viz", "compare", "analyze", "demo"),
    6: ("cli", "api", "__init__", "__main__", "export_cli", "*/cli"),
}


class Pending(NamedTuple):
    """A known violation another branch removes: ``importer`` imports ``imported``; ``owner`` fixes it."""

    importer: str
    imported: str
    owner: str


# Known violations tolerated while their fix is in flight (remove an entry when the fix lands;
# the test says when). Empty: the package has no upward import and no cycle.
PENDING: Tuple[Pending, ...] = (
)


class Edge(NamedTuple):
    """``importer`` imports ``imported`` at ``line`` of ``path``."""

    importer: str
    imported: str
    path: Path
    line: int


def module_files(src: Path, package: str = "segattn") -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``src/<package>``."""
    out: Dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_edges(modules: Dict[str, Path], package: str = "segattn") -> List[Edge]:
    """Every import of ``package`` (absolute or relative, at any depth of the syntax tree) as an edge."""
    edges: List[Edge] = []
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                           for a in node.names]
            for target in targets:
                if target == package or target.startswith(package + "."):
                    edges.append(Edge(name, _existing(target, modules), path, node.lineno))
    return sorted(set(edges))


def _existing(target: str, modules: Dict[str, Path]) -> str:
    """``target`` or, for ``import pkg.mod.attr``-like names that are no module, its longest module prefix."""
    while target not in modules and "." in target:
        target = target.rpartition(".")[0]
    return target


def _rel(name: str) -> str:
    """``segattn.compare.cli`` -> ``compare/cli``; the package itself -> ``__init__``."""
    parts = name.split(".")[1:]
    return "/".join(parts) if parts else "__init__"


def floor_of(name: str, floors: Dict[int, Tuple[str, ...]] = FLOORS) -> int:
    """The floor of module ``name`` (``KeyError`` when no entry of ``floors`` covers it)."""
    rel = _rel(name)
    for level in sorted(floors, reverse=True):  # exact names and patterns first (cli files sit on top)
        if any(rel == entry or ("*" in entry and fnmatch.fnmatchcase(rel, entry)) for entry in floors[level]):
            return level
    head = rel.split("/")[0]
    for level, entries in floors.items():
        if head in entries:
            return level
    raise KeyError(f"{name} ({rel}.py) has no floor: add it to FLOORS in tests/test_layers.py and to "
                   "the picture in docs/development.md")


def unit_of(name: str, floors: Dict[int, Tuple[str, ...]] = FLOORS) -> str:
    """The package-level node of ``name``: a file named by its own entry (``compare/cli``) stands alone,
    anything else belongs to its top-level subpackage (``segattn.models.heads`` -> ``segattn.models``)."""
    rel = _rel(name)
    own = any(rel == e or ("*" in e and fnmatch.fnmatchcase(rel, e)) for es in floors.values() for e in es)
    return name if own else ".".join(name.split(".")[:2])


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan, iterative), sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    nodes = sorted(set(graph) | {w for ws in graph.values() for w in ws})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return sorted(found)


def upward(edges: Iterable[Edge], floors: Dict[int, Tuple[str, ...]] = FLOORS) -> List[str]:
    """One line per import from a lower floor to a higher one."""
    return [f"{_where(e)}: {e.importer} (L{floor_of(e.importer, floors)}) imports {e.imported} "
            f"(L{floor_of(e.imported, floors)})"
            for e in edges if floor_of(e.imported, floors) > floor_of(e.importer, floors)]


def _where(edge: Edge) -> str:
    try:
        return f"{edge.path.relative_to(ROOT)}:{edge.line}"
    except ValueError:
        return f"{edge.path}:{edge.line}"


def file_graph(edges: Iterable[Edge]) -> Dict[str, Set[str]]:
    """Module -> the modules it imports (an import of itself left out)."""
    graph: Dict[str, Set[str]] = {}
    for e in edges:
        if e.imported != e.importer:
            graph.setdefault(e.importer, set()).add(e.imported)
    return graph


def unit_graph(edges: Iterable[Edge], floors: Dict[int, Tuple[str, ...]] = FLOORS) -> Dict[str, Set[str]]:
    """Package (see :func:`unit_of`) -> the packages it imports."""
    graph: Dict[str, Set[str]] = {}
    for e in edges:
        a, b = unit_of(e.importer, floors), unit_of(e.imported, floors)
        if a != b:
            graph.setdefault(a, set()).add(b)
    return graph


def _cycle_lines(found: List[List[str]], edges: List[Edge], key=lambda n: n) -> List[str]:
    """Each cycle with the imports that close it (file:line)."""
    lines = []
    for component in found:
        members = set(component)
        inner = sorted({f"  {_where(e)}: {e.importer} -> {e.imported}" for e in edges
                        if key(e.importer) in members and key(e.imported) in members
                        and key(e.importer) != key(e.imported)})
        lines += [" <-> ".join(component)] + inner
    return lines


def without_pending(edges: List[Edge], pending: Iterable[Pending] = PENDING) -> List[Edge]:
    """``edges`` less the tolerated ones."""
    skip = {(p.importer, p.imported) for p in pending}
    return [e for e in edges if (e.importer, e.imported) not in skip]


@pytest.fixture(scope="module")
def graph() -> Tuple[Dict[str, Path], List[Edge]]:
    modules = module_files(SRC)
    return modules, import_edges(modules)


def test_every_file_has_a_floor(graph):
    modules, _ = graph
    missing = []
    for name in modules:
        try:
            floor_of(name)
        except KeyError as exc:
            missing.append(str(exc.args[0]))
    assert not missing, "\n".join(missing)


def test_no_import_from_a_lower_floor_to_a_higher_one(graph):
    _, edges = graph
    bad = upward(without_pending(edges))
    assert not bad, "imports that run upward (move the code down, or the importer up):\n" + "\n".join(bad)


def test_no_import_cycle_between_files(graph):
    _, edges = graph
    kept = without_pending(edges)
    found = cycles(file_graph(kept))
    assert not found, "import cycles between files:\n" + "\n".join(_cycle_lines(found, kept))


def test_no_import_cycle_between_packages(graph):
    _, edges = graph
    kept = without_pending(edges)
    found = cycles(unit_graph(kept))
    assert not found, "import cycles between packages:\n" + "\n".join(_cycle_lines(found, kept, unit_of))


def test_pending_violations_still_occur(graph):
    """A pending entry whose import is gone has been fixed: delete it from PENDING."""
    _, edges = graph
    present = {(e.importer, e.imported) for e in edges}
    gone = [f"{p.importer} -> {p.imported} (fixed by {p.owner})" for p in PENDING
            if (p.importer, p.imported) not in present]
    assert not gone, "PENDING entries that no longer occur; delete them in tests/test_layers.py:\n" + "\n".join(gone)
    # and each is still a violation (upward, or part of a cycle), not an allowed import left on the list
    for p in PENDING:
        upward_edge = floor_of(p.imported) > floor_of(p.importer)
        in_cycle = any(p.importer in c and p.imported in c for c in cycles(file_graph(edges)))
        assert upward_edge or in_cycle, f"{p} is neither upward nor in a cycle: delete it from PENDING"


def doc_floors(text: str) -> Dict[int, Tuple[str, ...]]:
    """The floors drawn in docs/development.md: the rows ``│ L<n>  name  name ... │`` of its picture."""
    out: Dict[int, Tuple[str, ...]] = {}
    for match in re.finditer(r"^\s*│\s*L(\d)\s+(.*?)\s*│", text, flags=re.M):
        out[int(match.group(1))] = tuple(match.group(2).split())
    return out


def test_floors_in_the_docs_match_the_test():
    drawn = doc_floors(DOC.read_text(encoding="utf-8"))
    assert drawn == FLOORS, ("the picture of the floors in docs/development.md and FLOORS in "
                             f"tests/test_layers.py differ:\n  docs: {drawn}\n  test: {FLOORS}")


# The checker itself, on a small package written for the purpose: it must see what it claims to see.

def _write(root: Path, files: Dict[str, str]) -> Dict[str, Path]:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return module_files(root, "pkg")


def test_checker_sees_function_level_relative_and_from_imports(tmp_path):
    modules = _write(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "from .base import thing\n",
        "low/base.py": "import os\n\ndef f():\n    if True:\n        from pkg.high import run\n    return run\n",
        "high/__init__.py": "",
        "high/run.py": "from ..low import base\nimport numpy  # third-party: no edge\n",
        "high/cli.py": "from pkg import high\nimport pkg.low.base.f\n",
    })
    edges = {(e.importer, e.imported) for e in import_edges(modules, "pkg")}
    assert edges == {
        ("pkg.low", "pkg.low.base"),               # relative, from a package's __init__
        ("pkg.low.base", "pkg.high.run"),          # inside a function, inside an if
        ("pkg.high.run", "pkg.low.base"),          # two dots; `from pkg.low import base` is the module
        ("pkg.high.cli", "pkg.high"),              # `from pkg import high`: the subpackage
        ("pkg.high.cli", "pkg.low.base"),          # a dotted name beyond the last module
    }
    floors = {0: ("low",), 1: ("high",), 2: ("__init__", "*/cli")}
    found = import_edges(modules, "pkg")
    assert cycles(file_graph(found)) == [["pkg.high.run", "pkg.low.base"]]
    assert cycles(unit_graph(found, floors)) == [["pkg.high", "pkg.low"]]
    assert [line.split(": ", 1)[1] for line in upward(found, floors)] == ["pkg.low.base (L0) imports pkg.high.run (L1)"]
    assert floor_of("pkg.high.cli", floors) == 2 and unit_of("pkg.high.cli", floors) == "pkg.high.cli"
    with pytest.raises(KeyError, match="has no floor"):
        floor_of("pkg.other", floors)


def test_cycles_finds_every_circle_and_only_those():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"f"}, "g": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


def test_pending_hides_only_its_own_edge(tmp_path):
    modules = _write(tmp_path, {
        "__init__.py": "", "a.py": "def f():\n    import pkg.b\n", "b.py": "import pkg.a\n",
        "c.py": "import pkg.a\n",
    })
    edges = import_edges(modules, "pkg")
    assert cycles(file_graph(edges)) == [["pkg.a", "pkg.b"]]
    kept = without_pending(edges, [Pending("pkg.a", "pkg.b", "someone")])
    assert cycles(file_graph(kept)) == []
    assert ("pkg.c", "pkg.a") in {(e.importer, e.imported) for e in kept}
