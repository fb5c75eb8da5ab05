"""Plugins: a package the test installs registers an explainer, a scorer and a provider through entry points;
`autointerp plugins` lists them, `label` runs them as it runs the built-in ones, and a broken one is one line."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
"""A third-party plugin: nothing here subclasses autointerp's bases (contracts.adopt declares the rest)."""
from autointerp.llm.providers import ChatResponse, Usage
from autointerp.records import Explanation, Score


class Keywords:
    name, prompt_hash = "keywords", "kw-1"

    def explain(self, sample):
        w = max(sample.explain, key=lambda w: w.peak)
        token = w.tokens[max(range(len(w.tokens)), key=lambda i: w.activations[i])]
        return Explanation(dictionary=sample.dictionary, feature=sample.feature, text=f"the word {token.strip()!r}",
                           explainer=self.name, prompt_hash=self.prompt_hash, sampler=sample.config, seed=sample.seed)


class Length:
    name, version = "length", "len-1"

    def score(self, sample, explanation):
        return Score(self.name, self.version, "ok", 1.0 / len(explanation.text.split()), n_windows=len(sample.score))


class Echo:
    """An LLM provider that answers every explainer prompt with one fixed label."""

    name = "echo"

    def __init__(self, model):
        self.model = model

    async def complete(self, req):
        return ChatResponse(("Looking at the windows.\\nEXPLANATION: an echoed label",), Usage(10, 5, 0, 0), ("end",))

    async def aclose(self):
        pass


class Broken:
    name = "broken"


def make_explainer(ctx):
    assert ctx.dictionary.width > 0 and ctx.store is not None
    return Keywords()


def make_scorer(ctx):
    return Length()


def make_provider(model, **kw):
    return Echo(model)


def make_broken(ctx):
    return Broken()
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "autointerp-keywords-demo"
version = "0.3.1"

[project.entry-points."autointerp.explainers"]
keywords = "autointerp_keywords_demo:make_explainer"
broken = "autointerp_keywords_demo:make_broken"

[project.entry-points."autointerp.scorers"]
length = "autointerp_keywords_demo:make_scorer"

[project.entry-points."autointerp.providers"]
echo = "autointerp_keywords_demo:make_provider"
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin package, built and installed (pip, no network) into a folder of its own."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    (src / "autointerp_keywords_demo").mkdir(parents=True)
    (src / "autointerp_keywords_demo" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (src / "pyproject.toml").write_text(PYPROJECT)
    site = root / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return site


def _cli(site: Path, *args):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "autointerp", *args], capture_output=True, text=True, env=env)


def test_an_installed_plugin_is_listed_and_runs_like_a_built_in_part(plugin_site, ingested_path):
    r = _cli(plugin_site, "plugins", "--json")
    assert r.returncode == 0, r.stderr
    rows = {(p["kind"], p["name"]): p for p in json.loads(r.stdout)["plugins"]}
    assert set(rows) == {("explainer", "keywords"), ("explainer", "broken"), ("scorer", "length"),
                         ("provider", "echo")}
    assert rows["scorer", "length"]["package"] == "autointerp-keywords-demo"
    assert rows["scorer", "length"]["version"] == "0.3.1"

    store = str(ingested_path)
    r = _cli(plugin_site, "label", "--store", store, "--explainer", "keywords", "--scorer", "length,embedding",
             "--features", "0-5", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["explained"] > 0
    r = _cli(plugin_site, "labels", "--store", store, "--json")
    rows = json.loads(r.stdout)["labels"]
    assert rows and all(x["explainer"] == "keywords" and x["prompt_hash"] == "kw-1" for x in rows)
    assert all(x["explanation"].startswith("the word ") for x in rows)
    for x in rows:  # the plugin's grade beside a built-in one, with its own version
        assert x["scores"]["length"]["version"] == "len-1"
        assert x["scores"]["length"]["value"] == pytest.approx(1 / len(x["explanation"].split()), abs=1e-6)
        assert x["scores"]["embedding"]["status"] in ("ok", "undefined")

    # a provider plugin: PROVIDER:MODEL works wherever anthropic:MODEL does
    r = _cli(plugin_site, "label", "--store", store, "--explainer", "echo:tiny", "--scorer", "", "--features", "7",
             "--json")
    assert r.returncode == 0, r.stderr
    got = [x for x in json.loads(_cli(plugin_site, "labels", "--store", store, "--json").stdout)["labels"]
           if x["feature_id"] == 7]
    assert got and got[0]["explanation"] == "an echoed label" and got[0]["explainer"] == "echo:tiny"


def test_a_broken_or_missing_plugin_is_one_line(plugin_site, ingested_path):
    r = _cli(plugin_site, "label", "--store", str(ingested_path), "--explainer", "broken", "--features", "0")
    assert r.returncode == 7 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "lacks prompt_hash, explain" in r.stderr
    r = _cli(plugin_site, "label", "--store", str(ingested_path), "--explainer", "nope", "--features", "0")
    assert r.returncode == 2 and "keywords (plugin)" in r.stderr, r.stderr  # an unknown name: a bad value
    # without the plugin on the path, its names are unknown again
    r = subprocess.run([sys.executable, "-m", "autointerp", "plugins", "--json"], capture_output=True, text=True)
    assert json.loads(r.stdout)["plugins"] == []
