"""Every fenced ``python`` and ``bash`` block of README.md and docs/**/*.md runs as a test (Sybil).

How a page runs (the rules are written for readers in docs/development.md, "The docs are tests"):

- one pytest item per block, named ``README.md::line:N,column:1``; the blocks of one page run in
  order in one worker (``--dist loadgroup``), in one fresh temporary folder, sharing one Python
  namespace; the folder is removed after the page;
- ``python`` blocks run in this process with that folder as the working directory; ``bash`` blocks
  run in ``bash -e -o pipefail`` there; both see the environment below;
- environment: the running Python's ``bin`` first on ``PATH`` (``segattn``, ``python``), the tested
  ``segattn`` on ``PYTHONPATH``, ``SEGATTN_DOCS_SHORT=1`` (trainings, compares and demos shortened:
  ``segattn.engine.short``), ``SEGATTN_REPO`` = the checkout (for a block that only makes sense in a
  clone), ``SEGATTN_DATA`` passed through when set;
- markers, an HTML comment on the line(s) right before a fence:
  ``<!-- docs: skip (reason) -->`` skips the block, the reason in pytest's skip summary;
  ``<!-- docs: needs-data (camvid) -->`` skips it unless ``$SEGATTN_DATA/camvid`` exists;
  ``<!-- docs: output -->`` before a ``text`` fence: each non-empty line of it must appear, in order,
  in what the block before printed (stdout; ``...`` lines stand for anything);
- in a python block, ``EXPR  # -> VALUE`` asserts ``EXPR == VALUE`` (VALUE a Python literal, else it is
  compared with ``str(EXPR)``); a tensor's ``.shape`` compares with a tuple;
- after a failed block, the rest of its page is skipped ("an earlier block failed");
- pages written by the tools (``docs/results/*/``, ``docs/bench_*/``: reports holding the command that
  made them, hours of runs) are collected with every block skipped for that reason.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!--\s*docs:\s*([a-z-]+)\s*(?:\((.*?)\))?\s*-->")
TRAILING_MARKERS = re.compile(r"((?:[ \t]*<!--\s*docs:[^\n]*-->[ \t]*\n)+)[ \t]*$")
KNOWN = {"skip", "needs-data", "output"}
BLOCK_TIMEOUT_S = int(os.environ.get("SEGATTN_DOCS_TIMEOUT", "600"))  # seconds per bash block
TAIL = 3000


def is_docs_page(path: Path) -> bool:
    """README.md at the root, and every Markdown page under docs/."""
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    return path.suffix == ".md" and (str(rel) == "README.md" or rel.parts[0] == "docs")


def is_report_page(path: Path) -> bool:
    """A page a tool wrote: docs/results/<report>/**.md or docs/bench_*/*.md."""
    try:
        parts = Path(path).resolve().relative_to(ROOT).parts
    except ValueError:  # a page outside the checkout (tests of the runner)
        return False
    return len(parts) > 2 and parts[0] == "docs" and (parts[1] == "results" or parts[1].startswith("bench_"))


def tested_env(workdir: str) -> Dict[str, str]:
    """The environment a block runs in (see the module docstring)."""
    import segattn

    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    paths = [str(Path(segattn.__file__).resolve().parents[1])]
    paths += [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["SEGATTN_DOCS_SHORT"] = "1"
    env["SEGATTN_REPO"] = str(ROOT)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("PYTEST_CURRENT_TEST", None)
    env["HOME"] = env.get("HOME", workdir)
    return env


# ------------------------------------------------------------------------------------- page state
def setup_page(namespace: Dict[str, Any]) -> None:
    namespace["_docs"] = {"dir": tempfile.mkdtemp(prefix="segattn-docs-"), "failed": None, "output": None,
                          "capture": tempfile.mkdtemp(prefix="segattn-docs-out-")}
    namespace["__name__"] = "__docs__"


def teardown_page(namespace: Dict[str, Any]) -> None:
    state = namespace.get("_docs")
    if state:
        shutil.rmtree(state["dir"], ignore_errors=True)
        shutil.rmtree(state["capture"], ignore_errors=True)


@contextlib.contextmanager
def in_page(example: Any):
    """Skip after an earlier failure; remember this block's failure for the rest of the page."""
    state = example.namespace["_docs"]
    if state["failed"] is not None:
        skip(f"an earlier block of this page failed (line {state['failed']})")
    try:
        yield state
    except BaseException as exc:
        if not isinstance(exc, pytest.skip.Exception):
            state["failed"] = example.line
        raise


def skip(reason: str) -> None:
    """pytest.skip, reported at the block's page and line rather than at this file."""
    exc = pytest.skip.Exception(reason, _use_item_location=True)
    raise exc


def skip_reason(markers: List[tuple]) -> Optional[str]:
    for name, arg in markers:
        if name == "skip":
            return arg or "marked skip"
        if name == "needs-data":
            data = os.environ.get("SEGATTN_DATA")
            if not data or not (Path(data) / (arg or "")).is_dir():
                return f"needs the {arg} data set: SEGATTN_DATA is unset or has no {arg}/ folder"
    return None


# ----------------------------------------------------------------------------------------- python
def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def split_expected(text: str) -> tuple:
    """``(literal, True)`` for the longest prefix of ``text`` (cut at a ``:``) that is a Python literal, the
    rest being a remark; ``(text, False)`` when there is none."""
    cuts = [len(text)] + [i for i in range(len(text) - 1, 0, -1) if text[i] == ":"]
    for cut in cuts:
        value = _literal(text[:cut].strip())
        if not (isinstance(value, str) and value == text[:cut].strip()):
            return value, True
    return text, False


def docs_check(value: Any, expected_text: str, where: str) -> None:
    """The ``# ->`` assertion: ``value == literal`` (a shape compares as a tuple; a ``: remark`` after the
    literal is ignored), else ``str(value) == text``."""
    expected, is_literal = split_expected(expected_text)
    if not is_literal:
        ok, shown = str(value) == expected, str(value)
    else:
        got = tuple(value) if type(value).__name__ == "Size" else value
        ok, shown = bool(got == expected), repr(got)
    assert ok, f"{where}: the page says `# -> {expected_text}`, the code gives {shown}"


def arrow_comments(source: str) -> Dict[int, str]:
    """Line number -> the text after ``# ->`` of that line's comment."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.string.startswith("# ->"):
            found[tok.start[0]] = tok.string[4:].strip()
    return found


def compile_block(source: str, filename: str, first_line: int) -> Any:
    """The block compiled with its ``# ->`` lines turned into checks, line numbers as on the page."""
    tree = ast.parse(source, filename)
    arrows = arrow_comments(source)
    body = []
    for stmt in tree.body:
        expected = arrows.pop(stmt.end_lineno, None)
        if expected is not None:
            if not isinstance(stmt, ast.Expr):
                raise SyntaxError(f"{filename}:{first_line + stmt.lineno - 1}: `# ->` after a statement "
                                  "that is not an expression")
            where = f"{filename}:{first_line + stmt.lineno - 1}"
            call = ast.Call(ast.Name("__docs_check__", ast.Load()),
                            [stmt.value, ast.Constant(expected), ast.Constant(where)], [])
            stmt = ast.Expr(call)
        body.append(stmt)
    if arrows:
        raise SyntaxError(f"{filename}: `# ->` inside a multi-line statement (lines {sorted(arrows)})")
    tree.body = body
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, first_line - 1)
    return compile(tree, filename, "exec")


@contextlib.contextmanager
def page_process_state(workdir: str):
    """cwd and environment of this process set as a bash block would see them, restored afterwards."""
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    env = tested_env(workdir)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def run_python(example: Any, source: str, markers: List[tuple]) -> None:
    with in_page(example) as state:
        reason = skip_reason(markers)
        if reason:
            skip(reason)
        code = compile_block(source, str(example.path), example.line + 1)
        example.namespace["__docs_check__"] = docs_check
        out = io.StringIO()
        with page_process_state(state["dir"]):
            with contextlib.redirect_stdout(out):
                exec(code, example.namespace)
        state["output"] = out.getvalue()
        sys.stdout.write(state["output"])  # shown by pytest on failure


# ------------------------------------------------------------------------------------------- bash
BASH_ARROW = re.compile(r"^(?P<cmd>[^#\n]*?)\s+#[^\n]*?->\s?(?P<text>[^\n]*)$")


def bash_arrows(source: str, capture_dir: str) -> tuple:
    """The block with each ``CMD  # ... -> TEXT`` line's output also copied to a file, and the checks.

    Only a line that ends a command (its code part not ending in a backslash) counts.
    """
    lines, checks = [], []
    for i, line in enumerate(source.splitlines()):
        m = BASH_ARROW.match(line)
        if m and m.group("cmd").strip() and not m.group("cmd").rstrip().endswith("\\"):
            path = os.path.join(capture_dir, f"arrow{i}.txt")
            lines.append(f"{m.group('cmd')} | tee {shlex.quote(path)}")
            checks.append((i, m.group("text").strip(), path))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n", checks


def contains_in_order(text: str, expected: str) -> bool:
    """``expected``'s fragments (split on ``...``) appear in ``text`` in order, whitespace collapsed."""
    text, pos = normalise(text), 0
    for part in (normalise(p) for p in expected.split("...")):
        if part:
            pos = text.find(part, pos)
            if pos < 0:
                return False
            pos += len(part)
    return True


def run_bash(example: Any, source: str, markers: List[tuple]) -> None:
    with in_page(example) as state:
        reason = skip_reason(markers)
        if reason:
            skip(reason)
        script, checks = bash_arrows(source, state["capture"])
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=state["dir"],
                              env=tested_env(state["dir"]), capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT_S)
        state["output"] = proc.stdout
        if proc.returncode != 0:
            pytest.fail(f"{example.path}:{example.line}: the bash block exited with {proc.returncode}\n"
                        f"--- block\n{source}--- stdout (tail)\n{proc.stdout[-TAIL:]}\n"
                        f"--- stderr (tail)\n{proc.stderr[-TAIL:]}", pytrace=False)
        for i, text, path in checks:
            got = Path(path).read_text()
            if not contains_in_order(got, text):
                pytest.fail(f"{example.path}:{example.line + 1 + i}: the page says `-> {text}`, the command "
                            f"printed:\n{got[-TAIL:]}", pytrace=False)


# ----------------------------------------------------------------------------------------- output
def normalise(line: str) -> str:
    return " ".join(line.split())


def check_output(example: Any, expected: str) -> None:
    with in_page(example) as state:
        got = [normalise(x) for x in (state["output"] or "").splitlines()]
        pos = 0
        for want in (normalise(x) for x in expected.splitlines()):
            if not want or want == "...":
                continue
            hit = next((i for i in range(pos, len(got)) if want in got[i]), None)
            if hit is None:
                pytest.fail(f"{example.path}:{example.line}: the page shows the output line\n  {want}\n"
                            f"which the block before did not print (from its line {pos + 1} on); it printed:\n"
                            + "\n".join(got[-60:]), pytrace=False)
            pos = hit + 1


def report_page_skip(example: Any) -> None:
    skip("a report written by segattn compare/analyze/bench: the command that made it (hours of runs)")


# ----------------------------------------------------------------------------------------- parser
def markers_before(text: str, start: int) -> List[tuple]:
    m = TRAILING_MARKERS.search(text[:start])
    return [(n, a) for n, a in MARKER.findall(m.group(1))] if m else []


def parse_page(document: Any) -> Iterable[Any]:
    """Sybil parser: a region per python/bash block and per checked output block."""
    from sybil import Region
    from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

    text = document.text
    report = is_report_page(Path(document.path))
    for region in FencedCodeBlockLexer(language=r"[\w+-]*")(document):
        lang = region.lexemes["language"]
        source = str(region.lexemes["source"])
        markers = markers_before(text, region.start)
        line = text.count("\n", 0, region.start) + 1
        unknown = [n for n, _ in markers if n not in KNOWN]
        if unknown:
            raise ValueError(f"{document.path}:{line}: unknown docs marker(s) {unknown}; known: {sorted(KNOWN)}")
        if lang in ("python", "bash"):
            if any(n == "output" for n, _ in markers):
                raise ValueError(f"{document.path}:{line}: `docs: output` belongs before a ```text block")
            if report:
                yield Region(region.start, region.end, source, report_page_skip)
            elif lang == "python":
                yield Region(region.start, region.end, source,
                             lambda ex, s=source, m=markers: run_python(ex, s, m))
            else:
                yield Region(region.start, region.end, source,
                             lambda ex, s=source, m=markers: run_bash(ex, s, m))
        elif any(n == "output" for n, _ in markers):
            if lang != "text":
                raise ValueError(f"{document.path}:{line}: `docs: output` before a ```{lang} block (use ```text)")
            yield Region(region.start, region.end, source, lambda ex, s=source: check_output(ex, s))
        elif markers:
            raise ValueError(f"{document.path}:{line}: a docs marker before a ```{lang} block (only python "
                             "and bash blocks run)")


def make_sybil() -> Any:
    """The Sybil that collects README.md and docs/**/*.md (nothing else) with :func:`parse_page`."""
    from sybil import Sybil

    class DocsSybil(Sybil):
        def should_parse(self, path: Path) -> bool:
            return is_docs_page(Path(path))

    return DocsSybil(parsers=[parse_page], path=str(ROOT), setup=setup_page, teardown=teardown_page)


def collect_hook() -> Any:
    """``pytest_collect_file`` for the root conftest; every block of a page in one xdist group."""
    try:
        collect = make_sybil().pytest()
    except ImportError:  # the dev extra is not installed: say so once per page instead of running nothing
        def collect(file_path: Path, parent: Any) -> Any:
            if is_docs_page(file_path):
                return MissingSybil.from_parent(parent, path=file_path)
            return None

    def pytest_collect_file(file_path: Path, parent: Any) -> Any:
        node = collect(file_path, parent)
        return node

    return pytest_collect_file


def group_by_page(items: List[Any]) -> None:
    """``pytest_collection_modifyitems``: the blocks of one page stay in one xdist worker, in order.

    Marks them ``xdist_group`` and, under ``--dist loadgroup``, adds the ``@group`` suffix to their node
    ids itself: pytest-xdist 3.8 writes it to ``item._nodeid``, which pytest 9 no longer reads (node ids
    live in ``item._id``), so its own suffix has no effect there and a page's blocks would be spread over
    the workers.
    """
    for item in items:
        path = Path(str(getattr(item, "path", "")))
        if path.suffix != ".md" or not is_docs_page(path):
            continue
        group = "docs:" + str(path.relative_to(ROOT))
        item.add_marker(pytest.mark.xdist_group(name=group))
        if getattr(item.config.option, "loadgroup", False) and not item.nodeid.endswith("@" + group):
            set_nodeid(item, f"{item.nodeid}@{group}")


def set_nodeid(item: Any, nodeid: str) -> None:
    """Give ``item`` another node id (pytest < 9: ``_nodeid``; pytest 9: ``_id``)."""
    if isinstance(getattr(item, "_nodeid", None), str):
        item._nodeid = nodeid
    else:
        from _pytest.nodes import coerce_node_id

        item._id = coerce_node_id(nodeid)


class MissingSybil(pytest.File):
    def collect(self) -> Iterable[Any]:
        yield MissingSybilItem.from_parent(self, name="blocks")


class MissingSybilItem(pytest.Item):
    def runtest(self) -> None:
        pytest.skip("sybil is not installed (pip install -e .[dev]): the documentation blocks did not run")
