"""The diff page in Chromium (`autointerp diff --html`): the plot of grades that moved carries each grade
row's numbers as the diff's JSON has them, the filter offers every kind of change with its count, and the
rows listed keep every kind (not only the most numerous)."""

import json

import pytest
from browser import page
from typer.testing import CliRunner

from autointerp.cli import app

runner = CliRunner()
EVIL = '<img src=x onerror="document.title=1">'


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, minilm):
    """Run A labels 0-29 of a synthetic dictionary of token detectors; run B grades labels imported for 10-39
    (10-19: another feature's label, so their grades fall; 20-29: A's own text; 30-39: new, one with markup).
    (path, run A, run B)."""
    from autointerp.ingest import ingest_delphi
    from autointerp.ingest.synthetic import SyntheticCache, write_delphi_cache
    from autointerp.store import Store

    tmp = tmp_path_factory.mktemp("diffpage")
    folder = tmp / "cache" / "detectors"
    write_delphi_cache(folder, SyntheticCache(n_seq=300, ctx_len=64, width=256, l0=6, n_splits=4,
                                              model_name=str(minilm), n_token_features=40, vocab=(2000, 2200),
                                              dead=(200, 201)))
    path = tmp / "s.duckdb"
    with Store(path) as s:
        ingest_delphi(s, folder)
    a = json.loads(cli("label", "--store", path, "--features", "0-29", "--json").stdout)["run_id"]
    with Store(path, read_only=True) as s:
        own = {x["feature_id"]: x["explanation"] for x in s.labels.find(1)}
    texts = {f: own[f + 10] if f < 20 else own[f] if f < 30 else f"{EVIL} the word number {f}" for f in range(10, 40)}
    (tmp / "elsewhere.jsonl").write_text("".join(json.dumps({"feature_id": f, "explanation": t}) + "\n"
                                                 for f, t in texts.items()))
    assert cli("ingest", "labels", tmp / "elsewhere.jsonl", "--store", path, "--format", "jsonl").exit_code == 0
    b = json.loads(cli("label", "--store", path, "--explainer", "imported", "--json").stdout)["run_id"]
    return path, a, b


def _diff(path, a, b, out, *extra):
    r = cli("diff", "--store", path, "--runs", a, b, "--json", "--html", out, *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_the_plot_of_grade_moves_carries_the_diffs_numbers(two_runs, tmp_path):
    path, a, b = two_runs
    doc = _diff(path, a, b, tmp_path / "page", "--limit", "100")
    grades = [r for r in doc["rows"] if r["kind"] == "grade"]
    assert len(grades) == doc["counts"]["grade"] >= 3  # every one listed: the plot shows them all
    with page() as pg:
        pg.goto((tmp_path / "page" / "diff.html").as_uri())
        pg.wait_for_selector("body[data-ready='1']")
        points = pg.eval_on_selector_all("#grade-plot g.move", """gs => gs.map(g => ({
            feature: g.dataset.feature, scorer: g.dataset.scorer, a: +g.dataset.valueA, b: +g.dataset.valueB,
            ci_a: g.dataset.ciA.split(",").map(Number), ci_b: g.dataset.ciB.split(",").map(Number),
            way: g.classList.contains("up") ? "up" : "down",
            cx: [...g.querySelectorAll("circle")].map(c => +c.getAttribute("cx")),
            ci_x: [...g.querySelectorAll("line.ci")].map(l => [+l.getAttribute("x1"), +l.getAttribute("x2")]),
            href: g.querySelector("a").getAttribute("href"), name: g.querySelector("text").textContent}))""")
        assert sorted((p["feature"], p["scorer"], p["a"], p["b"], tuple(p["ci_a"]), tuple(p["ci_b"]))
                      for p in points) == sorted((str(r["feature_b"]), r["scorer"], r["value_a"], r["value_b"],
                                                  tuple(r["ci_a"]), tuple(r["ci_b"])) for r in grades)
        for p in points:  # drawn where the numbers say: each dot inside its interval, after right of before if up
            assert p["way"] == ("up" if p["b"] > p["a"] else "down")
            (xa, xb), ((la, ha), (lb, hb)) = p["cx"], p["ci_x"]
            assert la <= xa <= ha and lb <= xb <= hb and (xb > xa) == (p["way"] == "up")
            assert p["name"] == f"{p['feature']} · {p['scorer']}"
            row = pg.locator(p["href"])  # the point's name links to its row in the table
            assert row.count() == 1 and f"grade moved: {p['scorer']}" in row.inner_text()
        assert pg.errors == [] and pg.dialogs == []
        pg.screenshot(path=str(tmp_path / "diff.png"), full_page=True)


def test_the_filter_shows_every_kind_of_change_and_each_kind_keeps_its_share(two_runs, tmp_path):
    path, a, b = two_runs
    full = _diff(path, a, b, tmp_path / "full", "--limit", "100")
    c = full["counts"]
    assert c["relabelled"] >= 10 and c["grade"] >= 3 and (c["not_in_a"], c["not_in_b"]) == (10, 10)
    # a small --limit keeps every kind: the relabelled rows cannot crowd out the grades
    doc = _diff(path, a, b, tmp_path / "page", "--limit", "6")
    assert len(doc["rows"]) == 6 and doc["listed"]["relabelled"] == doc["listed"]["grade"] == 3
    with page() as pg:
        pg.goto((tmp_path / "page" / "diff.html").as_uri())
        pg.wait_for_selector("body[data-ready='1']")
        options = pg.eval_on_selector_all("#kind option", "os => os.map(o => [o.value, o.textContent])")
        assert [v for v, _ in options] == ["", "added", "gone", "relabelled", "meaning", "up", "down"]
        said = dict(options)
        for value, total in (("relabelled", c["relabelled"]), ("meaning", c["changed_meaning"]),
                             ("up", c["grade_up"]), ("down", c["grade_down"]), ("added", 0), ("gone", 0)):
            assert said[value].split(": ")[1].split(" ")[0] == str(total), said[value]
        assert "(3 listed)" in said["relabelled"]
        assert "10 features not in run B; 10 features not in run A" in pg.inner_text("#counts")
        assert pg.locator("#rows tr").count() == 6
        for value, want in (("relabelled", doc["listed"]["relabelled"]),
                            ("down", sum(r["kind"] == "grade" and r["delta"] < 0 for r in doc["rows"])),
                            ("gone", 0)):
            pg.select_option("#kind", value)
            assert pg.locator("#rows tr").count() == want
        pg.select_option("#kind", "")
        assert pg.locator("#rows img").count() == 0 and pg.title() != "1" and pg.errors == []
