"""No README, docs or src line points outside the repository (a clone must stand alone).

Markdown link targets are resolved from their page; every other ``../`` path (commands, inline code) is
resolved from the repository root, where the commands run, and in ``src`` from the file's folder (a
config's ``_base_: ../_base_/x.yaml``). Each must stay inside the repository. Paths of the machine the
project was built on (``shared/data``, ``shared/spec``, ``mmseg-venv`` beside the clone) are refused
wherever they appear.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
UP = re.compile(r"(?<![\w./-])((?:\.\./)+[\w./-]*)")
MACHINE = re.compile(r"(?:\.\./|/work/)(?:shared|mmseg-venv|main|wt)\b")


def doc_pages() -> List[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def src_files() -> List[Path]:
    return sorted(p for p in (ROOT / "src").rglob("*") if p.suffix in (".py", ".yaml", ".yml", ".json", ".md"))


def inside(path: Path) -> bool:
    resolved = path.resolve()
    return resolved == ROOT or ROOT in resolved.parents


def leaving(text: str, page_dir: Path, other_dir: Path) -> Iterable[str]:
    """Every path in ``text`` that resolves outside the repository, with its line number."""
    for lineno, line in enumerate(text.splitlines(), 1):
        links = {m.group(1) for m in LINK.finditer(line)}
        for target in links:
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor
            if not inside(page_dir / target.partition("#")[0]):
                yield f"{lineno}: link {target}"
        rest = LINK.sub("", line)
        for m in UP.finditer(rest):
            if not inside(other_dir / m.group(1)):
                yield f"{lineno}: path {m.group(1)}"
        for m in MACHINE.finditer(line):
            yield f"{lineno}: a path of the build machine: {m.group(0)}"


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_page_stays_inside_the_repository(page):
    bad = list(leaving(page.read_text(encoding="utf-8"), page.parent, ROOT))
    assert not bad, f"{page.relative_to(ROOT)} points outside the repository:\n" + "\n".join(bad)


def test_src_stays_inside_the_repository():
    bad = [f"{p.relative_to(ROOT)}:{b}" for p in src_files()
           for b in leaving(p.read_text(encoding="utf-8"), p.parent, p.parent)]
    assert not bad, "src points outside the repository:\n" + "\n".join(bad)


def test_the_check_sees_a_path_leaving_the_repository():
    page = ROOT / "docs" / "x.md"
    assert list(leaving("see [spec](../../shared/spec/modules.md)", page.parent, ROOT))
    assert list(leaving("run `../mmseg-venv/bin/python benchmarks/peers.py`", page.parent, ROOT))
    assert list(leaving("SEGATTN_DATA=../shared/data segattn train", page.parent, ROOT))
    assert not list(leaving("[Development](../development.md) and `data/camvid`", (ROOT / "docs" / "modules"), ROOT))
