"""The feature browser in headless Chromium: the static export from disk, and `autointerp serve` live.

The store's tokens and labels include markup (an <img onerror> and a <script> token, quoted by the
labels): the pages must show them as text and never run them."""

import json
import threading
import time
from contextlib import contextmanager
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import page

from autointerp.export import html
from autointerp.ingest import ingest_parquet
from autointerp.pipeline import LabelRun, label
from autointerp.store import Store, open_store

EVIL_IMG = '<img src=x onerror="window.__pwned=1">'
EVIL_SCRIPT = "<script>window.__pwned=1</script>"
WIDTH = 150


@pytest.fixture(scope="module")
def evil_store(tmp_path_factory):
    """Read only by the tests here (a test that writes copies it first): built once for the module."""
    return make_evil_store(tmp_path_factory.mktemp("evil"))


@contextmanager
def serving(path, dictionary=None, warm=False):
    """`autointerp serve`'s server on a free loopback port, in a thread: yields its URL. `warm`: it loads the
    dictionary's model for trace as it starts, as `autointerp serve` does."""
    from autointerp.export.serve import make_server

    with open_store(path, read_only=True) as s:
        server = make_server(s, port=0, dictionary=dictionary, warm=warm)
        t = threading.Thread(target=server.serve, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while not server.started:  # a condition, not a fixed sleep: uvicorn says when it listens
            assert t.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        try:
            yield server.url
        finally:
            server.stop()
            t.join(10)


def make_evil_store(tmp_path):
    """150 features over 400 contexts: 0 fires on EVIL_IMG, 1 on EVIL_SCRIPT, 2..9 on ordinary words, the
    rest at random; labelled offline."""
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(60)] + [EVIL_IMG, EVIL_SCRIPT, "\n"]
    tok = rng.integers(0, len(vocab), size=(400, 24))
    folder = tmp_path / "evil"
    folder.mkdir()
    pq.write_table(pa.table({"context_id": np.arange(400), "token_ids": [list(map(int, r)) for r in tok],
                             "tokens": [[vocab[i] for i in r] for r in tok]}), folder / "contexts.parquet")
    rows = []
    for f, trigger in enumerate([vocab.index(EVIL_IMG), vocab.index(EVIL_SCRIPT), *range(8)]):
        for c, p in zip(*np.nonzero(tok == trigger)):
            rows.append((f, c, p, 3.0 + rng.random()))
    for f in range(10, WIDTH):
        for _ in range(60):
            rows.append((f, int(rng.integers(400)), int(rng.integers(24)), float(rng.exponential())))
    f, c, p, v = (np.array(x) for x in zip(*rows))
    key = np.unique(np.stack([f, c, p], 1), axis=0, return_index=True)[1]
    pq.write_table(pa.table({"feature": f[key], "context_id": c[key], "position": p[key], "value": v[key]}),
                   folder / "activations.parquet")
    with Store(tmp_path / "evil.duckdb") as s:
        ingest_parquet(s, folder, dictionary="evil", width=WIDTH, model="toy", hook="layer.0")
        did = s.dictionary("evil").dictionary_id
        with s.transaction() as w:  # logit-lens tokens of features 0..9, the evil ones among them
            strings = np.array([EVIL_IMG, EVIL_SCRIPT, " ok", "\n"], dtype=object)
            up, down = np.tile([0, 1, 2], (10, 1)), np.tile([3, 2, 1], (10, 1))
            w.activations.add_output_tokens(did, np.arange(10), strings, (up, np.tile([3.0, 2.0, 1.0], (10, 1))),
                                (down, np.tile([-3.0, -2.0, -1.0], (10, 1))))
        label(s, s.dictionary("evil"), LabelRun(scorers=("embedding", "simulation")))
    return tmp_path / "evil.duckdb"


def _safe(pg) -> None:
    assert pg.evaluate("window.__pwned") is None and not pg.dialogs and not pg.errors, (pg.dialogs, pg.errors)
    assert pg.evaluate("document.querySelectorAll('img').length") == 0  # the token was never parsed as markup


def _ready(pg) -> None:
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)


def _column(pg, name: str) -> list[str]:
    heads = pg.locator("#head th").all_inner_texts()
    i = heads.index(name) + 1
    return pg.locator(f"#rows tr td:nth-child({i})").all_inner_texts()


def _lowers(pg, path) -> list[float]:
    """The lower ends of the simulation grades' intervals of the rows shown, in their order (from the store; to
    the 3 decimals a static page holds)."""
    shown = [int(x) for x in pg.locator("#rows tr").evaluate_all("rs => rs.map(r => r.dataset.feature)")]
    with open_store(path, read_only=True) as s:
        d = s.dictionary()
        scorers = s.labels.scorer_names(d.dictionary_id)
        t = s.labels.feature_table(d.dictionary_id, scorers).to_pydict()
    lower = dict(zip(t["feature"], t[f"l{scorers.index('simulation')}"]))
    return [round(lower[f], 3) for f in shown]


def _grades(pg, name: str) -> list[float]:
    """A scorer's column as values: each defined cell reads "value ± half-width" (its 95% interval)."""
    cells = [x for x in _column(pg, name) if x != "–"]
    assert cells and all(" ± " in x for x in cells), cells[:3]
    return [float(x.split(" ± ")[0]) for x in cells]


def test_static_browser_pages_filters_sorts_and_never_runs_a_label(evil_store, tmp_path, monkeypatch):
    monkeypatch.setattr(html, "SHARD", 40)  # 4 index scripts, streamed in
    monkeypatch.setattr(html, "FILE_BYTES", 60_000)  # a few features a page-data script
    out = tmp_path / "site"
    with open_store(evil_store, read_only=True) as s:
        res = html.write_html(s, out)
    assert res["shards"] == 4 and res["pages"] == WIDTH
    # the features a script holds are chosen so a feature page loads ~FILE_BYTES, not the whole export
    sizes = [p.stat().st_size for p in (out / "data" / "f").iterdir()]
    assert 1 < res["feature_shard"] < 64 and res["feature_files"] == len(sizes) >= WIDTH // res["feature_shard"]
    assert max(sizes) == res["largest_feature_file"] < 2 * 60_000
    with page() as pg:
        pg.goto((out / "index.html").as_uri())
        _ready(pg)
        pg.wait_for_selector("#grade-scatter")  # the plots from the export's data/overview.js
        assert pg.locator("#grade-scatter a.pt").count() == WIDTH
        assert sum(_bars(pg, "#density-hist")) + int(pg.inner_text("#plots").split(" never do")[0].split()[-1]) == WIDTH
        assert pg.locator("#rows tr").count() == 100 and "page 1 of 2" in pg.inner_text("#page")
        assert _lowers(pg, evil_store) == sorted(_lowers(pg, evil_store), reverse=True)  # surest first
        pg.click("#next")
        assert pg.locator("#rows tr").count() == WIDTH - 100
        shown = {int(x) for x in pg.locator("#rows tr").evaluate_all("rs => rs.map(r => r.dataset.feature)")}
        pg.click("#prev")
        shown |= {int(x) for x in pg.locator("#rows tr").evaluate_all("rs => rs.map(r => r.dataset.feature)")}
        assert shown == set(range(WIDTH))  # every shard arrived
        pg.fill("#filter", "onerror")
        labels = _column(pg, "label")
        assert labels and all("onerror" in x for x in labels) and any(json.dumps(EVIL_IMG) in x for x in labels)
        pg.fill("#filter", "")
        pg.click("#head th[data-key='0']")  # sort by feature id
        assert _column(pg, "feature")[:3] == ["0", "1", "2"]
        _safe(pg)
        pg.click("#rows a[href='feature.html#1']")
        _ready(pg)
        with open_store(evil_store, read_only=True) as s:
            (mine,) = s.labels.find(s.dictionary().dictionary_id, [1])
            (st,) = s.activations.feature_stats(s.dictionary().dictionary_id, [1])
        assert mine["explanation"] in pg.inner_text("#labels")  # shown as text, quotes and all
        pg.wait_for_selector("#act-hist")
        assert sum(_bars(pg, "#act-hist")) == st.n_firing  # every firing, from the export's data
        toks = pg.locator("#top .tok").evaluate_all("ts => ts.map(t => [t.textContent, t.title])")
        fired = [t for t in toks if t[0] == EVIL_SCRIPT]
        assert fired and all(title.startswith(json.dumps(EVIL_SCRIPT)) and float(title.rsplit(": ", 1)[1]) >= 3
                             for _, title in fired)  # hover: the token and its activation
        assert pg.locator("#simulation .pair").count() > 0 and "simulated" in pg.inner_text("#simulation")
        promoted = pg.locator("#outputs [data-side='promoted'] .tok").all_inner_texts()
        assert promoted[:2] == [EVIL_IMG, EVIL_SCRIPT] and "suppresses" in pg.inner_text("#outputs")
        _safe(pg)
        shot = tmp_path / "feature.png"
        pg.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        pg.goto((out / "feature.html").as_uri() + "#9999")
        _ready(pg)
        assert "No windows" in pg.inner_text("#main")


def test_serve_browser_pages_sorts_filters_and_searches_through_the_api(evil_store):
    with serving(evil_store) as url, page() as pg:
        pg.goto(url + "feature.html#0")
        _ready(pg)
        assert json.dumps(EVIL_IMG) in pg.inner_text("#labels") and pg.locator("#quantile .tok").count() > 0
        assert pg.locator("#outputs [data-side='suppressed'] .tok").count() == 3  # through the API
        _safe(pg)
        pg.goto(url)
        _ready(pg)
        assert pg.locator("#rows tr").count() == 100 and "page 1 of 2" in pg.inner_text("#page")
        assert _lowers(pg, evil_store) == sorted(_lowers(pg, evil_store), reverse=True)  # sorted by the server
        pg.select_option("#sort", label="simulation (value)")
        _ready(pg)
        sims = _grades(pg, "simulation")
        assert sims == sorted(sims, reverse=True)  # by value when asked
        with pg.expect_response(lambda r: "api/features" in r.url and "sort=feature" in r.url):
            pg.click("#head th[data-key='0']")
        _ready(pg)
        assert _column(pg, "feature")[:3] == ["0", "1", "2"]
        with pg.expect_response(lambda r: "api/features" in r.url and "q=onerror" in r.url):
            pg.fill("#filter", "onerror")
        _ready(pg)
        labels = _column(pg, "label")
        assert labels and all("onerror" in x for x in labels) and any(json.dumps(EVIL_IMG) in x for x in labels)
        pg.fill("#search", "the word w3")
        with pg.expect_response(lambda r: "api/search" in r.url):
            pg.click("#searchbox button")
        _ready(pg)
        assert "nearest in meaning" in pg.inner_text("#page") and pg.locator("#rows tr").count() > 0
        _safe(pg)
        with urllib.request.urlopen(url + "api/features?limit=1") as r:
            assert json.loads(r.read())["total"] == WIDTH
        for method, path, status in [("POST", "api/features", 405), ("DELETE", "", 405),
                                     ("GET", "api/features/99999", 404), ("GET", "../evil.duckdb", 404)]:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(urllib.request.Request(url + path, method=method, data=b"" if
                                                              method == "POST" else None))
            assert e.value.code == status


# -- plots, and grades explained ---------------------------------------------------------------------------

def _bars(pg, sel: str) -> list[int]:
    return [int(x) for x in pg.locator(f"{sel} rect.bar").evaluate_all("rs => rs.map(r => r.dataset.count)")]


def test_the_pages_plot_firings_density_and_grades_and_say_why_a_grade_is_missing(evil_store, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from autointerp.cli import app
    from autointerp.score import MEASURES

    path = tmp_path / "evil.duckdb"
    shutil.copyfile(evil_store, path)  # features 10.. fire at random, densely: no intruder question can be made
    r = CliRunner().invoke(app, ["label", "--store", str(path), "--features", "0-11", "--scorer", "intruder"])
    assert r.exit_code == 0, r.output
    with open_store(path, read_only=True) as s:
        d = s.dictionary()
        stats = {st.feature: st for st in s.activations.feature_stats(d.dictionary_id)}
    live = sum(st.n_firing > 0 for st in stats.values())
    with serving(path) as url, page(1300, 1000) as pg:
        def get(p):
            with urllib.request.urlopen(url + p) as resp:
                return json.loads(resp.read())

        rows = {x["feature"]: x for x in get("api/features?sort=feature&limit=1000")["rows"]}
        pg.goto(url)
        _ready(pg)
        pg.wait_for_selector("#grade-scatter")
        assert pg.locator("#sort option:checked").inner_text() == "simulation (lower bound)"
        assert MEASURES["simulation"] in pg.inner_text("#measures") and MEASURES["intruder"] in pg.inner_text("#measures")
        # the dictionary's density histogram holds every feature that fires, once
        assert sum(_bars(pg, "#density-hist")) == live and f"{WIDTH - live} never do" in pg.inner_text("#plots")
        # each point of the scatter is a feature at its density and simulation grade, with its interval
        pts = pg.locator("#grade-scatter a.pt").evaluate_all(
            "as => as.map(a => [+a.dataset.feature, +a.dataset.x, +a.dataset.y])")
        assert len(pts) == sum(x["scores"]["simulation"] is not None for x in rows.values()) == WIDTH
        for f, x, y in pts:
            assert y == pytest.approx(rows[f]["scores"]["simulation"], abs=1e-6)
            assert x == pytest.approx(rows[f]["density"], rel=1e-6)
        # an undefined grade says why, in its cell
        pg.fill("#filter", "11")
        _ready(pg)
        why = rows[11]["why"]["intruder"]
        assert why.startswith("undefined: ") and why in pg.inner_text("#rows tr[data-feature='11'] .why")
        f = pts[-1][0]  # drawn last: on top of any point at the same place
        pg.locator(f"#grade-scatter a.pt[data-feature='{f}'] circle").click()
        _ready(pg)
        pg.wait_for_selector("#act-hist")
        assert pg.inner_text("#title") == f"Feature {f}"
        doc = get(f"api/features/{f}")
        # every firing of the feature, once; the quantile windows' peaks marked on it
        assert sum(_bars(pg, "#act-hist")) == stats[f].n_firing == doc["stats"]["n_firing"]
        marks = pg.locator("#act-hist line.mark").evaluate_all("ls => ls.map(l => +l.dataset.value)")
        assert marks == pytest.approx([max(w["acts"]) for w in doc["quantile"]]) and marks
        this = pg.locator("#density-hist line.mark.this").get_attribute("data-value")
        assert float(this) == pytest.approx(np.log10(stats[f].density), abs=1e-4)  # the page has 6 decimals
        assert sum(_bars(pg, "#density-hist")) == live
        assert MEASURES["simulation"] in pg.inner_text("#measures")
        # each grade says what it rests on: its windows by kind
        assert "windows: " in pg.inner_text("#labels .why")
        _safe(pg)
        pg.goto(url + "feature.html#11")
        _ready(pg)
        assert why.split(": ", 1)[1] in pg.inner_text("#labels")  # the intruder grade's reason, shown
        # search hits carry density, max and intervals
        hit = get("api/search?q=the%20word%20w3&limit=3")["rows"][0]
        f = hit["feature"]
        assert hit["density"] == pytest.approx(stats[f].density) and hit["max"] == pytest.approx(stats[f].max_value)
        assert hit["ci"]["simulation"] == pytest.approx(rows[f]["ci"]["simulation"])
        pg.screenshot(path=str(tmp_path / "plots.png"))
