"""The documentation site covers every registered module, model, CLI command and public name.

Two layers:

- the generated Markdown (``scripts/make_docs.py``), checked without MkDocs: every registered module,
  upsampler, model and (sub)command has its section, and a module or subcommand registered later
  appears without editing a page;
- the built site: ``mkdocs build --strict`` in a fresh process (broken links or anchors, pages missing
  from the nav, docstring warnings all fail it), then the HTML is searched for every name, for
  resources fetched from other hosts (none allowed), and rendered in headless Chromium when present.

Without the ``docs`` extra the second layer is skipped, unless SEGATTN_REQUIRE_DOCS=1 (CI) makes
that a failure.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import segattn
from segattn.registry import MODULES

ROOT = Path(__file__).resolve().parents[1]


def load_make_docs():
    spec = importlib.util.spec_from_file_location("make_docs_under_test", ROOT / "scripts" / "make_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


make_docs = load_make_docs()


def heading_ids(markdown: str) -> set:
    return set(re.findall(r"^#+ .*\{ #([A-Za-z0-9_.-]+) \}$", markdown, flags=re.M))


# ------------------------------------------------------------------ generated Markdown (no MkDocs needed)
def test_every_module_and_upsampler_has_a_section_on_its_family_page():
    pages = make_docs.module_pages()
    for name in segattn.list_modules() + segattn.list_upsamplers():
        page = make_docs.module_page_path(name)
        assert page in pages, f"{name}: no page {page}"
        assert name in heading_ids(pages[page]), f"{name}: no section on {page}"
        assert f"#{name})" in make_docs.module_table(), f"{name}: not in the module table"


def test_every_model_has_a_section():
    ids = heading_ids(make_docs.model_catalogue())
    missing = [m for m in segattn.list_models() if m not in ids]
    assert not missing, f"models without a catalogue section: {missing}"


def test_every_cli_command_has_a_section():
    ids = heading_ids(make_docs.cli_reference())
    commands = make_docs.cli_commands()
    assert {"segattn train", "segattn data download", "segattn compare"} <= set(commands)
    missing = [c for c in commands if c.replace(" ", "-") not in ids]
    assert not missing, f"commands without a CLI reference section: {missing}"


def test_a_module_registered_later_appears_without_editing_a_page():
    @MODULES.register("zz_docs_probe", paper="Nobody, 2099", family="pairwise", order="O(1)")
    class Probe(segattn.modules.ContextModule):
        """Probe equation: y = x."""

        def __init__(self, in_channels: int, gain: float = 2.5) -> None:
            super().__init__()

    try:
        page = make_docs.module_pages()["modules/pairwise.md"]
        assert "zz_docs_probe" in heading_ids(page)
        assert "gain = 2.5" in page and "Probe equation: y = x." in page and "O(1)" in page
    finally:
        MODULES._entries.pop("zz_docs_probe", None)


def test_a_subcommand_added_later_appears_in_the_cli_reference(monkeypatch):
    import segattn.cli

    original = segattn.cli.build_parser

    def with_probe() -> argparse.ArgumentParser:
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.add_parser("zzprobe", help="a probe subcommand").add_argument("--flux", help="flux level")
        return parser

    monkeypatch.setattr(segattn.cli, "build_parser", with_probe)
    text = make_docs.cli_reference()
    assert "segattn-zzprobe" in heading_ids(text) and "--flux" in text


def test_every_picture_keeps_its_command(tmp_path):
    items = make_docs.figures()
    assert items, "docs/viz/figures.yaml lists no picture"
    for item in items:
        assert item["module"] in MODULES, f"{item['file']}: unknown module {item['module']}"
        assert any("segattn viz" in c for c in item["commands"]), f"{item['file']}: no viz command"


def test_every_public_subpackage_has_an_api_page():
    pages = make_docs.api_pages()
    mods = make_docs.api_modules()
    assert {"segattn", "segattn.modules", "segattn.models", "segattn.lowrank", "segattn.ops"} <= set(mods)
    for mod in mods:
        assert any(f"::: {mod}\n" in text for text in pages.values()), f"{mod}: no API page"


def test_markers_in_pages_are_known():
    for page in (ROOT / "docs").rglob("*.md"):
        for name in re.findall(r"<!-- segattn:([a-z-]+) -->", page.read_text()):
            assert name in make_docs.markers(), f"{page}: unknown marker {name}"


# --------------------------------------------------------------------------------- the built site
def require_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        if os.environ.get("SEGATTN_REQUIRE_DOCS") == "1":
            pytest.fail("SEGATTN_REQUIRE_DOCS=1 but MkDocs is not installed (pip install -e .[docs])")
        pytest.skip("the docs extra is not installed (pip install -e .[docs])")


def build_site(out: Path) -> Path:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # never -q: quiet mode hides the warnings from --strict, and a broken site then builds
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


def html_ids(path: Path) -> set:
    return set(re.findall(r'id="([^"]+)"', path.read_text(encoding="utf-8")))


def test_built_site(tmp_path):
    """``mkdocs build --strict`` once, then every check on its HTML (one build, also under xdist)."""
    require_mkdocs()
    site = build_site(tmp_path / "site")
    check_names(site)
    check_public_names(site)
    check_no_external_resources(site)
    check_renders_in_chromium(site, tmp_path)


def check_names(site: Path) -> None:
    for name in segattn.list_modules() + segattn.list_upsamplers():
        page = site / make_docs.module_page_path(name).replace(".md", ".html")
        assert page.is_file(), f"{name}: {page.name} was not built"
        assert name in html_ids(page), f"{name}: no section in the built {page.name}"
    models = html_ids(site / "models.html")
    assert not [m for m in segattn.list_models() if m not in models]
    cli = html_ids(site / "cli.html")
    assert not [c for c in make_docs.cli_commands() if c.replace(" ", "-") not in cli]
    index = (site / "index.html").read_text(encoding="utf-8")
    for page in make_docs.generated_pages():  # every generated page is in the nav
        assert f'href="{page.replace(".md", ".html")}"' in index, f"{page} is not in the nav"


def check_public_names(site: Path) -> None:
    ids = html_ids(site / "api" / "segattn.html")
    for n in segattn.__all__:
        # segattn.export is both a function and a submodule: the function is on the submodule's page
        where = html_ids(site / "api" / f"{n}.html") if (site / "api" / f"{n}.html").is_file() else set()
        assert f"segattn.{n}" in ids or f"segattn.{n}.{n}" in where, f"segattn.{n}: not in the API reference"
    for sub in ("models", "lowrank", "ops", "data", "viz", "compare"):
        mod = __import__(f"segattn.{sub}", fromlist=["_"])
        ids = html_ids(site / "api" / f"{sub}.html")
        missing = [n for n in getattr(mod, "__all__", []) if f"segattn.{sub}.{n}" not in ids]
        assert not missing, f"segattn.{sub}: not in the API reference: {missing}"
    ids = html_ids(site / "api" / "modules.html")
    for name in segattn.list_modules():
        f = MODULES.get(name)
        assert f"{f.__module__}.{f.__qualname__}" in ids, f"{name}: class not in the API reference"


EXTERNAL = re.compile(r'<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*\b(?:src|href)="(?:https?:)?//',
                      re.I)
CSS_EXTERNAL = re.compile(r'(?:@import\s+|url\()\s*["\']?(?:https?:)?//', re.I)


def check_no_external_resources(site: Path) -> None:
    bad = []
    for path in site.rglob("*"):
        if path.suffix == ".html" and EXTERNAL.search(path.read_text(encoding="utf-8")):
            bad.append(f"{path.relative_to(site)}: {EXTERNAL.search(path.read_text(encoding='utf-8')).group(0)}")
        elif path.suffix == ".css" and CSS_EXTERNAL.search(path.read_text(encoding="utf-8")):
            bad.append(f"{path.relative_to(site)}: {CSS_EXTERNAL.search(path.read_text(encoding='utf-8')).group(0)}")
    assert not bad, "the site loads resources from other hosts:\n" + "\n".join(bad)


def check_renders_in_chromium(site: Path, tmp_path: Path) -> None:
    """One headless Chromium load of a catalogue page, served on the loopback as a host would (the search
    index needs HTTP: from file:// Material's search worker cannot load it): it draws, and the console
    stays silent."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("SEGATTN_REQUIRE_BROWSER") == "1":
            pytest.fail("SEGATTN_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)")
        return  # the page checks above still ran; tests/viz/test_page.py reports the missing browser
    shot = tmp_path / "page.png"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # loopback only, stopped below
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/modules/lowrank.html"
        proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                               "--window-size=1200,1000", f"--screenshot={shot}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    dom = proc.stdout
    assert 'id="ema"' in dom and "md-nav" in dom, f"page not rendered:\n{proc.stderr[-2000:]}"
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, "console messages:\n" + "\n".join(console)
    import numpy as np
    from PIL import Image

    hsv = np.asarray(Image.open(shot).convert("HSV")).astype(np.float64)
    colourful = float(((hsv[..., 1] > 60) & (hsv[..., 2] > 40)).mean())  # the header bar, links, code
    assert colourful > 0.02, f"the screenshot looks blank ({colourful:.3%} coloured pixels)"


# ------------------------------------------------------------------------------------------- README
def test_readme_links_resolve_and_keeps_its_first_commands():
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert first.startswith("bash scripts/setup.sh && .venv/bin/segattn demo ")
    assert "\nbash scripts/test.sh " in first
    assert len(text.splitlines()) <= 200, "the README is meant to fit a screen or two: move text into docs/"
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # URLs (nothing may point beside the clone: tests/docs/test_links.py)
            continue
        path, _, anchor = target.partition("#")
        if not (ROOT / path).exists():
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
            if anchor not in slugs:
                broken.append(target)
    assert not broken, f"README links that lead nowhere: {broken}"


# the machine-specific folders a published record or page could leak (users have none of them;
# /tmp is everyone's, so a page may tell a developer to make a throwaway venv there)
OUTSIDE_PATH = re.compile(r"(?:^|[\s=\"'(])(?:/(?:work|home|root|mnt|scratch)/|\.\./shared\b)")


def test_published_pages_and_records_name_no_path_outside_the_repository():
    """README, docs pages and the records under docs/results name paths inside the repository (or a
    user's own folders: runs/, outputs/, data/) only: a reader has none of this machine's folders."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "docs").rglob("*.json")),
             *sorted((ROOT / "docs").rglob("*.yaml")), *sorted((ROOT / "docs").rglob("*.csv"))]
    leaks = [f"{f.relative_to(ROOT)}: {m.group(0).strip()}"
             for f in files for m in [OUTSIDE_PATH.search(f.read_text(encoding="utf-8"))] if m]
    assert not leaks, leaks


def test_the_outside_path_check_can_fail():
    assert OUTSIDE_PATH.search('"work_dir": "/work/runs/fcn_camvid"')
    assert OUTSIDE_PATH.search("--out /home/me/peers/x.json")
    assert OUTSIDE_PATH.search("SEGATTN_DATA=../shared/data")
    assert not OUTSIDE_PATH.search('"work_dir": "runs/fcn_camvid" (see docs/results/x.json)')


@pytest.mark.parametrize("model", ["emanet", "fcn"])
def test_the_camvid_recipe_rows_are_the_published_records(model):
    """The one-seed CamVid rows of the README and docs/results.md (mIoU, aAcc, mAcc, wall time) are
    the numbers of docs/results/camvid_<model>_summary.json."""
    record = json.loads((ROOT / "docs" / "results" / f"camvid_{model}_summary.json").read_text())
    m = record["metrics"]
    cells = [f"{100 * m[k]:.1f}" for k in ("mIoU", "aAcc", "mAcc")]
    for page in ("README.md", "docs/results.md"):
        row = next(line for line in (ROOT / page).read_text().splitlines() if line.startswith(f"| `{model}` | {cells[0]} "))
        parts = [c.strip() for c in row.strip("|").split("|")]
        assert parts[1:4] == cells, (page, row)
        assert parts[-1] == f"{round(record['wall_time_s'] / 60)} min", (page, row)
