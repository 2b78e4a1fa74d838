"""MkDocs hooks (``hooks:`` in mkdocs.yml): add the generated pages while the site builds.

- ``on_config``: the generated pages join the nav (family pages after ``modules/index.md``, API pages
  after ``api/index.md``), so a new module family or subpackage gets its own entry.
- ``on_files``: the generated pages (``scripts/make_docs.py``: ``generated_pages()``) are added as
  in-memory files; nothing is written into ``docs/``.
- ``on_page_markdown``: ``<!-- segattn:NAME -->`` markers in hand-written pages become generated
  blocks (module table, model catalogue, CLI reference, API index, figures).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import make_docs  # noqa: E402

_PAGES: Dict[str, str] = {}


def _pages() -> Dict[str, str]:
    if not _PAGES:
        _PAGES.update(make_docs.generated_pages())
    return _PAGES


def _extend(nav: List[Any], anchor: str, new: List[str]) -> bool:
    """Append ``new`` to the nav section whose list holds ``anchor``; True when found."""
    for item in nav:
        children = list(item.values())[0] if isinstance(item, dict) else None
        if isinstance(children, list):
            if anchor in children or any(isinstance(c, dict) and anchor in c.values() for c in children):
                children.extend(p for p in new if p not in children)
                return True
            if _extend(children, anchor, new):
                return True
    return False


def on_config(config: Any) -> Any:
    _PAGES.clear()
    pages = sorted(_pages())
    nav = config["nav"]
    for anchor, prefix in (("modules/index.md", "modules/"), ("api/index.md", "api/")):
        new = [p for p in pages if p.startswith(prefix)]
        if prefix == "modules/":  # family order as in make_docs, upsamplers last
            new = [f"modules/{f}.md" for f in make_docs.module_families()] + ["modules/upsamplers.md"]
        if not _extend(nav, anchor, new):
            raise ValueError(f"mkdocs.yml: no nav section lists {anchor}")
    return config


def on_files(files: Files, config: Any) -> Files:
    for path, text in _pages().items():
        if files.get_file_from_path(path) is not None:
            raise ValueError(f"docs/{path} exists, but the build generates that page: remove the file")
        files.append(File.generated(config, path, content=text))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return make_docs.expand_markers(markdown, page.file.src_uri)
