"""The documentation site (mkdocs.yml, docs/) builds offline in strict mode, and README's links into it hold.

Strict mode fails the build on any warning: a page missing from the nav, a broken relative link or anchor, a
docstring mkdocstrings cannot render. The CLI reference, the exit codes and the store schema are made from
the code during the build (docs/hooks/reference.py), so a command, exit code or migration added without its
page still shows up there.
"""

import html
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS_PACKAGES = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings": "mkdocstrings",
                 "mkdocstrings_handlers.python": "mkdocstrings-python"}


def _missing() -> list[str]:
    out = []
    for module, dist in DOCS_PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            out.append(dist)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if missing := _missing():
        pytest.fail(f"{', '.join(missing)} not installed: install the docs extra (pip install -e '.[docs]'; "
                    "README command 2 installs it with '.[test]')")
    out = tmp_path_factory.mktemp("site")
    # Offline: any fetch through a proxy-aware client goes to a closed port and fails the build.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], check=False,
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t0
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}\n{r.stderr}"
    assert took < 120, f"the docs build took {took:.0f} s: keep it to seconds"
    return out


def test_the_docs_build_offline_in_strict_mode(site):
    assert (site / "index.html").exists() and (site / "reference" / "cli" / "index.html").exists()
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, page
        # nothing is loaded from another origin: every script, image and stylesheet is the site's own
        loaded = re.findall(r"<(?:script|img|iframe)\b[^>]*\bsrc=\"([^\"]*)\"", text)
        loaded += re.findall(r"<link\b[^>]*\bhref=\"([^\"]*)\"", text)
        assert [u for u in loaded if re.match(r"(https?:)?//", u)] == [], page


def test_generated_reference_pages_hold_the_code(site):
    import typer

    from autointerp.cli import app
    from autointerp.errors import EXIT_CODES
    from autointerp.store.schema import MIGRATIONS

    cli = (site / "reference" / "cli" / "index.html").read_text()
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="autointerp")
    for name in root.list_commands(ctx):
        assert f"autointerp {name}" in cli, name
    codes = (site / "reference" / "exit-codes" / "index.html").read_text()
    for code in EXIT_CODES:
        assert f"<td>{code}</td>" in codes, code
    schema = (site / "reference" / "store-schema" / "index.html").read_text()
    assert f"The schema after migration {MIGRATIONS[-1][0]}" in schema and "<code>activations</code>" in schema
    api = (site / "reference" / "api" / "workspace" / "index.html").read_text()
    assert 'id="autointerp.workspace.open"' in api and 'id="autointerp.workspace.Workspace"' in api
    notebook = html.unescape(re.sub(r"<[^>]+>", "", (site / "tutorials" / "notebook" / "index.html").read_text()))
    assert "autointerp.open(store, write=True)" in notebook  # the notebook's cells, rendered into its page
    assert (site / "tutorials" / "quickstart.ipynb").exists()  # the notebook ships beside its page


def test_readme_links_into_the_docs_exist():
    readme = (ROOT / "README.md").read_text()
    links = [u for u in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme) if "://" not in u]
    assert any(u.startswith("docs/") for u in links), "README links into docs/"
    for u in links:
        assert (ROOT / u).exists(), f"README links to {u}, which does not exist"


def test_every_docs_page_is_in_the_nav():
    # strict mode warns about a page left out of the nav too; this names it without a build
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert {p for p in pages if p not in nav} == set()


def test_readme_says_what_each_grade_measures_as_the_pages_do():
    from autointerp.score import MEASURES

    text = " ".join((ROOT / "README.md").read_text().split())
    for name, sentence in MEASURES.items():
        assert f"`{name}`: {sentence}" in text, name
