"""The generated part of the documentation site: module and model catalogues, CLI and API reference.

Everything here is computed from the registries, the docstrings, the signatures and the argparse
parser, so a new module, model, subcommand or subpackage appears in the site without editing a page.
``scripts/mkdocs_hooks.py`` calls these functions while ``mkdocs build`` runs (nothing is written into
``docs/``); run this file to see the generated Markdown on disk::

    .venv/bin/python scripts/make_docs.py --out outputs/docs-generated
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml

import segattn
from segattn.registry import MODELS, MODULES, UPSAMPLERS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FAMILY_TITLES = {
    "pairwise": "Pairwise attention",
    "sparse": "Sparse and factorised attention",
    "lowrank": "Low-rank reconstruction",
    "pooling": "Pooling baselines",
}
FAMILY_INTRO = {
    "pairwise": "Attention over all pixels, or over pooled anchors that stand for them.",
    "sparse": "Attention restricted to a structured subset of pixels (rows and columns, groups, "
              "windows, sampled neighbours), composed to reach the whole image.",
    "lowrank": "Reconstruction through a few bases or graph nodes: map pixels to K nodes, reason on "
               "the nodes, map back (`Y = M_rev f(M_map X)`).",
    "pooling": "Context by pooling at fixed scales, the baselines the attention modules are compared with.",
}
# Pages for which markers in a hand-written page are replaced by generated Markdown.
MARKER = "<!-- segattn:{} -->"


# ---------------------------------------------------------------------------------------------- helpers
def _source(factory: Callable[..., Any]) -> str:
    try:
        source = inspect.getsourcefile(factory)
    except TypeError:
        return "?"
    if not source:
        return "?"
    return str(Path(source).resolve().relative_to(Path(segattn.__file__).resolve().parent.parent.parent))


def _doc(factory: Callable[..., Any]) -> str:
    return inspect.cleandoc(factory.__doc__ or "(no docstring)")


def _signature(factory: Callable[..., Any]) -> str:
    """The constructor's keywords with their defaults, one per line (``self`` left out)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return ""
    params = [p for p in sig.parameters.values() if p.name != "self"]
    lines = []
    for p in params:
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text = "*" + text
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + text
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        lines.append(text)
    return ",\n".join(lines)


def _fence(text: str, lang: str = "text") -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text}\n{ticks}\n"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def figures() -> List[Dict[str, Any]]:
    """The pictures under ``docs/viz/`` with their captions and the commands that made them."""
    path = DOCS / "viz" / "figures.yaml"
    items = yaml.safe_load(path.read_text()) or []
    for item in items:
        for key in ("file", "module", "caption", "commands"):
            if not item.get(key):
                raise ValueError(f"{path}: figure {item.get('file', '?')!r} has no {key!r}")
        if not (DOCS / "viz" / item["file"]).is_file():
            raise ValueError(f"{path}: {item['file']} is not in docs/viz/")
    listed = {i["file"] for i in items}
    for png in sorted((DOCS / "viz").glob("*.png")):
        if png.name not in listed:
            raise ValueError(f"docs/viz/{png.name} is not in {path.name}: every picture keeps its command")
    return items


def figure_markdown(item: Dict[str, Any], prefix: str) -> str:
    cmds = "\n".join(item["commands"]).rstrip()
    return (f"![{item['caption']}]({prefix}viz/{item['file']})\n\n{item['caption']} Made with:\n\n"
            + _fence(cmds, "bash"))


# ------------------------------------------------------------------------------------- module catalogue
def module_families() -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for name in segattn.list_modules():
        out.setdefault(MODULES.meta(name).get("family", "other"), []).append(name)
    order = list(FAMILY_TITLES)
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0])))


def module_page_path(name: str) -> str:
    if name in UPSAMPLERS:
        return "modules/upsamplers.md"
    return f"modules/{MODULES.meta(name).get('family', 'other')}.md"


def module_table(link_prefix: str = "") -> str:
    """name | paper | family | order: every registered module, then every upsampler."""
    rows = ["| name | paper | family | order (MACs) |", "|---|---|---|---|"]
    for reg, suffix, names in ((MODULES, "", segattn.list_modules()),
                               (UPSAMPLERS, " (upsampler)", segattn.list_upsamplers())):
        for name in names:
            meta = reg.meta(name)
            page = module_page_path(name)
            rows.append(f"| [`{name}`]({link_prefix}{page}#{name}){suffix} | {_cell(meta.get('paper', ''))} | "
                        f"{meta.get('family', '')} | {_cell(meta.get('order', ''))} |")
    return "\n".join(rows) + "\n"


def _module_section(name: str, reg: Any, kind: str, pictures: List[Dict[str, Any]]) -> str:
    entry = reg.entry(name)
    meta = dict(entry.meta)
    models = [m for m in segattn.list_models() if name in (MODELS.meta(m).get("context") or ())]
    facts = [f"**Paper**: {meta.pop('paper', '?')}", f"**Family**: {meta.pop('family', '?')}",
             f"**Cost order** (MACs): `{meta.pop('order', '?')}`"]
    facts += [f"**{k}**: {v}" for k, v in meta.items()]
    facts.append(f"**Class**: `{entry.factory.__module__}.{entry.factory.__qualname__}` in `{_source(entry.factory)}`")
    if models:
        facts.append("**Models using it**: " + ", ".join(f"[`{m}`](../models.md#{m})" for m in models))
    parts = [f"## `{name}` {{ #{name} }}\n", f"{kind}. " + " · ".join(facts) + "\n",
             "**Signature and defaults**\n", _fence(f"{entry.factory.__name__}(\n" + _indent(_signature(entry.factory))
                                                    + "\n)", "python"),
             "**Equation, defaults and deviations** (the docstring)\n", _fence(_doc(entry.factory))]
    for item in pictures:
        if item["module"] == name:
            parts.append(figure_markdown(item, "../"))
    return "\n".join(p for p in parts if p)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def module_pages() -> Dict[str, str]:
    """``modules/<family>.md`` for every family in the registry, plus ``modules/upsamplers.md``."""
    pictures = figures()
    pages: Dict[str, str] = {}
    gen = ("*Generated from the registry and the docstrings by `scripts/make_docs.py` at every "
           "`mkdocs build`.*\n")
    for family, names in module_families().items():
        title = FAMILY_TITLES.get(family, family.capitalize())
        table = ["| name | paper | order (MACs) |", "|---|---|---|"]
        table += [f"| [`{n}`](#{n}) | {_cell(MODULES.meta(n).get('paper', ''))} | "
                  f"{_cell(MODULES.meta(n).get('order', ''))} |" for n in names]
        body = [f"# {title}\n", FAMILY_INTRO.get(family, "") + "\n", gen, "\n".join(table) + "\n"]
        body += [_module_section(n, MODULES, "Context module", pictures) for n in names]
        pages[f"modules/{family}.md"] = "\n".join(body)
    names = segattn.list_upsamplers()
    body = ["# Upsamplers\n",
            "Modules that change the spatial size: `segattn.create_upsampler(name, channels, scale_factor=2)` "
            "maps (B, C, H, W) to (B, C, 2H, 2W); `flops(H, W)` takes the input size.\n", gen]
    body += [_module_section(n, UPSAMPLERS, "Upsampler", pictures) for n in names]
    pages["modules/upsamplers.md"] = "\n".join(body)
    return pages


# ------------------------------------------------------------------------------------------- models
def model_recipes(name: str) -> List[str]:
    from segattn.engine.config import list_configs

    return [c for c in list_configs("*") if fnmatch.fnmatch(c.split("/")[-1], f"{name}_*")]


def model_catalogue() -> str:
    """A table of every registered model, then one section each (paper, modules, recipes, docstring)."""
    rows = ["| model | paper | context modules |", "|---|---|---|"]
    sections = []
    for name in segattn.list_models():
        entry = MODELS.entry(name)
        meta = dict(entry.meta)
        ctx = meta.pop("context", ()) or ()
        links = ", ".join(f"[`{c}`]({module_page_path(c)}#{c})" for c in ctx) or "none"
        paper = meta.pop("paper", "")
        rows.append(f"| [`{name}`](#{name}) | {_cell(paper)} | {links} |")
        facts = [f"**Paper**: {paper}", f"**Context modules**: {links}"]
        facts += [f"**{k}**: {v}" for k, v in meta.items()]
        facts.append(f"**Factory**: `{entry.factory.__module__}.{entry.factory.__qualname__}` in "
                     f"`{_source(entry.factory)}`")
        recipes = model_recipes(name)
        sec = [f"### `{name}` {{ #{name} }}\n", " · ".join(facts) + "\n",
               _fence(f"model = segattn.create_model(\"{name}\", num_classes=19)  # keywords below", "python"),
               "**Keywords and defaults**\n",
               _fence(f"{entry.factory.__name__}(\n" + _indent(_signature(entry.factory)) + "\n)", "python"),
               _fence(_doc(entry.factory))]
        if recipes:
            sec.append("Shipped recipes:\n\n" + _fence("\n".join(f"segattn train --config {r}" for r in recipes),
                                                       "bash"))
        sections.append("\n".join(sec))
    return "\n".join(rows) + "\n\n" + "\n".join(sections)


# ------------------------------------------------------------------------------------------------ CLI
def _subcommands(parser: argparse.ArgumentParser) -> List[Tuple[str, argparse.ArgumentParser, str]]:
    out = []
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, sub, helps.get(name, "")))
    return out


def cli_commands(parser: Optional[argparse.ArgumentParser] = None, prefix: str = "segattn") -> List[str]:
    """Every (sub)command of the ``segattn`` parser, e.g. ``segattn train``, ``segattn data download``."""
    if parser is None:
        from segattn.cli import build_parser

        parser = build_parser()
    names = []
    for name, sub, _ in _subcommands(parser):
        names.append(f"{prefix} {name}")
        names += cli_commands(sub, f"{prefix} {name}")
    return names


def cli_reference() -> str:
    """One section per subcommand with its ``--help`` text, straight from the argparse parser."""
    from segattn.cli import build_parser

    parser = build_parser()
    parts = ["| command | what it does |", "|---|---|"]
    sections: List[str] = []

    def walk(p: argparse.ArgumentParser, prefix: str, level: int) -> None:
        for name, sub, help_text in _subcommands(p):
            full = f"{prefix} {name}"
            anchor = full.replace(" ", "-")
            parts.append(f"| [`{full}`](#{anchor}) | {_cell(help_text)} |")
            sub.prog = full
            sections.append(f"{'#' * level} `{full}` {{ #{anchor} }}\n\n{help_text}\n\n"
                            + _fence(sub.format_help().rstrip()))
            walk(sub, full, level + 1)

    walk(parser, "segattn", 2)
    parser.prog = "segattn"
    top = _fence(parser.format_help().rstrip())
    return top + "\n" + "\n".join(parts) + "\n\n" + "\n".join(sections)


# ------------------------------------------------------------------------------------------------ API
def api_modules() -> List[str]:
    """``segattn`` and each public top-level module or subpackage of it (new ones included)."""
    skip = {"__main__", "cli"}
    names = ["segattn"]
    for info in pkgutil.iter_modules(segattn.__path__):
        if not info.name.startswith("_") and info.name not in skip:
            names.append(f"segattn.{info.name}")
    return names


def api_pages() -> Dict[str, str]:
    pages = {}
    for mod in api_modules():
        page = "api/" + ("segattn" if mod == "segattn" else mod.split(".", 1)[1]) + ".md"
        pages[page] = (f"# `{mod}`\n\n*Generated from the docstrings at every `mkdocs build`.*\n\n"
                       f"::: {mod}\n    options:\n      show_root_heading: false\n"
                       + ("      show_submodules: true\n" if mod != "segattn" else ""))
    return pages


def api_index() -> str:
    rows = ["| module | what it holds |", "|---|---|"]
    for mod in api_modules():
        page = "segattn" if mod == "segattn" else mod.split(".", 1)[1]
        doc = (__import__(mod, fromlist=["_"]).__doc__ or "").strip().splitlines()
        rows.append(f"| [`{mod}`]({page}.md) | {_cell(doc[0] if doc else '')} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------------------ all pages
def generated_pages() -> Dict[str, str]:
    """Whole pages that exist only in the built site (path under docs/ -> Markdown)."""
    pages = module_pages()
    pages.update(api_pages())
    return pages


def markers() -> Dict[str, Callable[[], str]]:
    """``<!-- segattn:NAME -->`` in a hand-written page is replaced by ``markers()[NAME]()``."""
    return {
        "module-table": lambda: module_table("../"),
        "model-catalogue": model_catalogue,
        "cli-reference": cli_reference,
        "api-index": api_index,
        "figures": lambda: "\n".join(figure_markdown(f, "") for f in figures()),
    }


def expand_markers(markdown: str, page: str = "?") -> str:
    table = markers()

    def repl(match: re.Match) -> str:
        name = match.group(1)
        if name not in table:
            raise ValueError(f"{page}: unknown generated block {match.group(0)} (known: {sorted(table)})")
        return table[name]()

    return re.sub(r"<!-- segattn:([a-z-]+) -->", repl, markdown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/docs-generated", help="folder for the generated Markdown")
    args = ap.parse_args()
    out = Path(args.out)
    for page, text in generated_pages().items():
        (out / page).parent.mkdir(parents=True, exist_ok=True)
        (out / page).write_text(text)
    for name, fn in markers().items():
        (out / "blocks").mkdir(parents=True, exist_ok=True)
        (out / "blocks" / f"{name}.md").write_text(fn())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
