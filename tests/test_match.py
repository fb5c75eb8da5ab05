"""Matching two dictionaries over one corpus: a dictionary against a permuted, noised copy of itself (a
stand-in for a retrained SAE) recovers its partners by co-activation and by decoder cosine; bad pairs are
one-line errors that write nothing."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.ingest.synthetic import add_retrained_copy
from autointerp.match import MatchConfig, match_dictionaries
from autointerp.store import Store

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(r, code: int, message: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output, r.output


@pytest.fixture
def pair(ingested_path):
    """The ingested dictionary with random output directions, and a retrained copy of it: (path, perm)."""
    with Store(ingested_path) as s:
        d = s.dictionary()
        with s.transaction() as w:
            w.activations.add_directions(d.dictionary_id, np.random.default_rng(3).standard_normal((d.width, 48)))
        perm = add_retrained_copy(s, d, "retrained", seed=1)
    return ingested_path, perm


def test_a_permuted_noised_copy_recovers_its_partners_by_both_methods(pair):
    path, perm = pair
    r = cli("match", "--store", path, "--from", "layers.3", "--to", "retrained", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc["methods"]) == {"coactivation", "decoder"} and doc["methods"]["decoder"]["search"] == "exhaustive"
    with Store(path, read_only=True) as s:
        a, b = s.dictionary("layers.3"), s.dictionary("retrained")
        live = np.flatnonzero(s.activations.firing_counts(b.dictionary_id) > 0)
        for method in ("coactivation", "decoder"):
            m = s.matches.pairs(a.dictionary_id, b.dictionary_id, method)
            right = perm[m["from_feature"]] == m["to_feature"]
            on_live = np.isin(m["to_feature"], live)
            assert right[on_live].sum() >= 0.95 * len(live), (method, right[on_live].sum(), len(live))
            assert np.all(m["similarity"] <= 1.0 + 1e-5)
        co = s.matches.pairs(a.dictionary_id, b.dictionary_id, "coactivation")
        assert set(co["to_feature"].tolist()) == set(live.tolist())  # a feature that never fires has no partner
        assert doc["live_to"] == len(live) and doc["methods"]["coactivation"]["pairs"] == len(live)
        assert doc["agreement"] >= 0.95
        assert set(s.matches.match_methods(a.dictionary_id, b.dictionary_id)) == {"coactivation", "decoder"}
    # matching again replaces, never duplicates
    assert cli("match", "--store", path, "--from", "layers.3", "--to", "retrained", "--json").exit_code == 0
    with Store(path, read_only=True) as s:
        assert len(s.matches.pairs(1, 2, "coactivation")["to_feature"]) == len(live)


def test_co_activation_is_found_in_small_ranges_and_decoder_among_its_candidates(pair):
    """Ranges of a few rows each (the memory bound at work), and a decoder search too large to be exhaustive
    (among the co-activation candidates): the same partners."""
    path, perm = pair
    with Store(path) as s:
        a, b = s.dictionary("layers.3"), s.dictionary("retrained")
        whole = match_dictionaries(s, a, b, MatchConfig())
        before = {m: s.matches.pairs(a.dictionary_id, b.dictionary_id, m) for m in ("coactivation", "decoder")}
        small = match_dictionaries(s, a, b, MatchConfig(pairs_per_chunk=200, exhaustive_flops=0))
        assert small.methods["decoder"]["search"] == "coactivation candidates"
        for m in ("coactivation", "decoder"):
            after = s.matches.pairs(a.dictionary_id, b.dictionary_id, m)
            live = after["to_feature"]
            agree = before[m]["from_feature"][np.isin(before[m]["to_feature"], live)] == after["from_feature"]
            assert agree.mean() >= 0.99, m
        assert small.methods["coactivation"]["pairs"] == whole.methods["coactivation"]["pairs"]
        np.testing.assert_allclose(s.matches.pairs(a.dictionary_id, b.dictionary_id, "coactivation")["similarity"],
                                   before["coactivation"]["similarity"], atol=1e-5)


def test_bad_pairs_are_one_line_errors_and_write_nothing(pair, delphi_cache):
    from autointerp.ingest import ingest_delphi

    path, _ = pair
    other, _ = delphi_cache("other", n_seq=40, seed=9)  # other tokens: another corpus
    with Store(path) as s:
        ingest_delphi(s, other, dictionary="other")
        a = s.dictionary("layers.3")
        with s.transaction() as w:  # directions of another width
            w.activations.add_directions(s.dictionary("other").dictionary_id, np.ones((s.dictionary("other").width, 8)))
        digest = s.content_digest()
    base = ["match", "--store", path]
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "layers.3"), 9, "match a dictionary with another")
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "other"), 9, "over the same tokens")
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "retrained", "--method", "bogus"), 2,
                    "unknown match method 'bogus'")
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "nope"), 3, "no dictionary named 'nope'")
    with Store(path, read_only=True) as s:
        assert s.content_digest() == digest
    with Store(path) as s:
        with s.transaction() as w:  # a third dictionary over the same corpus, with 8-wide directions
            b = w.activations.add_dictionary(name="narrow", corpus_id=a.corpus_id, model="m", hook="h", width=4, kind="external",
                                 source="test")
            b.append([0, 1], [0, 1], [0, 0], [1.0, 2.0])
            b.finish()
            w.activations.add_directions(b.dictionary_id, np.ones((4, 8)))
        with s.transaction() as w:
            b = w.activations.add_dictionary(name="bare", corpus_id=a.corpus_id, model="m", hook="h", width=4, kind="external",
                                 source="test")
            b.append([0], [0], [0], [1.0])
            b.finish()
        digest = s.content_digest()
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "narrow"), 9, "48-wide and those of 'narrow' 8-wide")
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "bare", "--method", "decoder"), 9,
                    "'bare' has no output directions")
    with Store(path, read_only=True) as s:
        assert s.content_digest() == digest
    r = cli(*base, "--from", "layers.3", "--to", "narrow", "--method", "coactivation", "--json")
    assert r.exit_code == 0 and set(json.loads(r.stdout)["methods"]) == {"coactivation"}


# -- carrying labels ---------------------------------------------------------------------------------

LLM = ["--explainer", "anthropic:claude-haiku-x", "--api-key-env", "K", "--rpm", "60000", "--scorer", "embedding"]


def test_carry_keeps_matched_labels_and_explains_only_the_rest(pair, monkeypatch):
    from loopback import Loopback, scripted

    path, perm = pair
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=scripted) as server:
        first = cli("label", "--store", path, "--dictionary", "layers.3", *LLM, "--base-url", server.url, "--json")
        assert first.exit_code == 0, first.output
        before = server.count("/v1/messages")
        r = cli("label", "--store", path, "--dictionary", "retrained", *LLM, "--base-url", server.url,
                "--carry-from", "layers.3", "--min-similarity", "0.5", "--json")
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        calls = server.count("/v1/messages") - before
        with Store(path, read_only=True) as s:
            b = s.dictionary("retrained")
            live = int((s.activations.firing_counts(b.dictionary_id) > 0).sum())
            assert "coactivation" in s.matches.match_methods(1, b.dictionary_id)  # matched first, as it was not stored
            rows = s.labels.find(b.dictionary_id)
            old = {r["feature_id"]: r["explanation"] for r in s.labels.find(1)}
        assert out["carried"] >= 0.9 * live and out["carried"] + out["explained"] + out["skipped"] == b.width
        runs = json.loads(cli("job", "list", "--store", path, "--json").stdout)["runs"]
        row = next(x for x in runs if x["run_id"] == out["run_id"])  # the run's ledger row adds up too
        assert (row["features_done"], row["features_carried"], row["features_skipped"]) == (
            out["explained"], out["carried"], out["skipped"])
        assert calls == out["explained"]  # an explainer call only for what was not carried
        carried = [r for r in rows if r["carried"]]
        assert len(carried) == out["carried"]
        inverse = np.argsort(perm)
        for r in carried:
            partner = int(r["carried"].split("#")[1].split(",")[0])
            assert partner == inverse[r["feature_id"]] and r["explanation"] == old[partner]
            assert r["carried"].startswith(f"layers.3#{partner}, coactivation 0.")
            assert r["evidence"]["carried_from"]["explanation_id"] and "embedding" in r["scores"]
            assert r["explainer"] == "anthropic:claude-haiku-x" and r["evidence"]["carried_from"]["min_similarity"] == 0.5
        # its diff pairs features at the carry's threshold, and says so; a given one wins
        d = json.loads(cli("diff", "--store", path, "--dictionaries", "layers.3", "retrained", "--json").stdout)
        assert d["similarity"]["min"] == 0.5 and f"run {out['run_id']}" in d["similarity"]["why"]
        assert "similarity >= 0.5" in d["paired_by"] and d["counts"]["pairs"] >= len(carried)
        text = cli("diff", "--store", path, "--dictionaries", "layers.3", "retrained", "--min-similarity", "0.9")
        assert "similarity >= 0.9: --min-similarity" in text.stdout, text.output
        # done is done: a rerun explains nothing and carries nothing
        again = json.loads(cli("label", "--store", path, "--dictionary", "retrained", *LLM, "--base-url", server.url,
                               "--carry-from", "layers.3", "--json").stdout)
        assert again["already_done"] == b.width and server.count("/v1/messages") - before == calls


def test_a_carried_label_that_grades_too_low_is_explained_anew_and_kept_as_a_candidate(pair):
    path, _ = pair
    assert cli("label", "--store", path, "--dictionary", "layers.3", "--features", "0-39", "--scorer",
               "embedding,simulation").exit_code == 0
    r = cli("label", "--store", path, "--dictionary", "retrained", "--carry-from", "layers.3", "--carry-min-score",
            "1.5", "--scorer", "embedding,simulation", "--carry-method", "decoder", "--min-similarity", "0.5",
            "--json")  # no grade reaches 1.5: every carried label is tried, then explained anew
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["carry_rejected"] >= 30
    # a diff of the two pairs features as that carry did: by decoder, at 0.5, and says so
    d = json.loads(cli("diff", "--store", path, "--dictionaries", "layers.3", "retrained", "--json").stdout)
    assert d["paired_by"] == "decoder match, similarity >= 0.5" and f"run {out['run_id']}" in d["similarity"]["why"]
    d = json.loads(cli("diff", "--store", path, "--dictionaries", "layers.3", "retrained", "--method", "coactivation",
                       "--json").stdout)  # another method: no carry of it recorded a threshold
    assert d["paired_by"] == "coactivation match, similarity >= 0.8" and "the default" in d["similarity"]["why"]
    with Store(path, read_only=True) as s:
        b = s.dictionary("retrained")
        rows = s.labels.find(b.dictionary_id, candidates=True)
        reasons = {o["feature_id"]: o["reason"] for o in s.labels.label_outcomes(b.dictionary_id, "ok")}
    kept = [r for r in rows if r["carried"] and r["chosen"]]  # kept: only where no label can be graded
    assert len(kept) == out["carried"] and all(r["scores"]["embedding"]["status"] == "undefined" for r in kept)
    tried = [r for r in rows if r["carried"] and not r["chosen"]]
    assert len(tried) == out["carry_rejected"] and not any(r["chosen"] for r in tried)
    for r in tried:
        assert any(x["chosen"] and not x["carried"] and x["feature_id"] == r["feature_id"] for x in rows)
        assert "embedding" in r["scores"] and "< 1.5; explained anew" in reasons[r["feature_id"]]


def test_carry_bad_input_is_one_line_and_writes_nothing(pair, delphi_cache, tmp_path):
    from autointerp.ingest import ingest_delphi
    from autointerp.job.config import JobConfigError, parse_config

    path, _ = pair
    other, _ = delphi_cache("other", n_seq=40, seed=9)
    with Store(path) as s:
        ingest_delphi(s, other, dictionary="other")
        digest = s.content_digest()
    base = ["label", "--store", path, "--dictionary", "retrained"]
    _one_line_error(cli(*base, "--carry-from", "nope"), 3, "no dictionary named 'nope'")
    _one_line_error(cli(*base, "--carry-from", "retrained"), 7, "is the dictionary being labelled")
    _one_line_error(cli(*base, "--carry-from", "other"), 9, "over the same tokens")
    _one_line_error(cli(*base, "--carry-from", "layers.3", "--carry-method", "bogus"), 2, "carry method must be")
    _one_line_error(cli(*base, "--carry-from", "layers.3", "--min-similarity", "2"), 2, "--min-similarity")
    with Store(path, read_only=True) as s:
        assert s.content_digest() == digest
    cfg = parse_config('[job]\ncarry_from = "layers.3"\n[carry]\nmin_similarity = 0.9\nmargin = 0.05\n')
    assert (cfg.run.carry.source, cfg.run.carry.min_similarity, cfg.run.carry.margin) == ("layers.3", 0.9, 0.05)
    for text, message in (('[carry]\nmin_similarity = 0.9\n', "needs [job] carry_from"),
                          ('[job]\ncarry_from = "a"\n[carry]\nthreshold = 1\n', "[carry] has no key 'threshold'"),
                          ('[job]\ncarry_from = "a"\n[carry]\nmethod = "x"\n', "[carry] carry method must be")):
        with pytest.raises(JobConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_config(text)
    job = tmp_path / "job.toml"
    job.write_text('[job]\ndictionary = "retrained"\ncarry_from = "retrained"\n')
    _one_line_error(cli("job", "run", "--config", job, "--store", path), 20, "is the dictionary being labelled")


# -- what changed --------------------------------------------------------------------------------------

def _digest(path) -> str:
    with Store(path, read_only=True) as s:
        return s.content_digest()


def test_diff_of_two_runs_counts_added_gone_relabelled_and_moved_grades(delphi_cache, tmp_path):
    """Run A labels features 0-29 (token detectors); labels made elsewhere are imported for 10-39 (10-19:
    another feature's label, 20-29: the same text as A's, 30-39: new) and run B grades them: 20 compared
    (10 relabelled, and the swapped labels' grades fall beyond their intervals); 0-9 are not in run B and
    30-39 not in run A, counted, not listed as gone and added. --features narrows it."""
    from autointerp.ingest import ingest_delphi

    folder, _ = delphi_cache("detectors", n_seq=300, n_token_features=40)
    path = tmp_path / "detectors.duckdb"
    with Store(path) as s:
        ingest_delphi(s, folder)
    scorers = ["--scorer", "embedding,simulation"]
    a = json.loads(cli("label", "--store", path, "--features", "0-29", *scorers, "--json").stdout)
    with Store(path, read_only=True) as s:
        own = {x["feature_id"]: x["explanation"] for x in s.labels.find(1)}
    texts = {f: own[f + 10] if f < 20 else own[f] if f < 30 else f"the word number {f}" for f in range(10, 40)}
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("".join(json.dumps({"feature_id": f, "explanation": t}) + "\n" for f, t in texts.items()))
    assert cli("ingest", "labels", elsewhere, "--store", path, "--format", "jsonl").exit_code == 0
    b = json.loads(cli("label", "--store", path, "--explainer", "imported", *scorers, "--json").stdout)
    assert a["run_id"] and b["run_id"] and a["run_id"] != b["run_id"] and b["graded"] == 30
    before = _digest(path)
    r = cli("diff", "--store", path, "--runs", a["run_id"], b["run_id"], "--json", "--limit", "1000")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert _digest(path) == before  # a diff of runs reads only
    with Store(path, read_only=True) as s:  # the truth: each side's labels and grades as the store holds them
        rows = s.labels.find(1)
    la = {x["feature_id"]: x for x in rows if x["run_id"] == a["run_id"]}
    lb = {x["feature_id"]: x for x in rows if x["imported"]}
    c = doc["counts"]
    assert (c["added"], c["gone"], c["pairs"], c["relabelled"]) == (0, 0, 20, 10)
    assert (c["not_in_b"], c["not_in_a"]) == (10, 10) and (c["labelled_a"], c["labelled_b"]) == (30, 30)
    assert c["grade"] >= 3 and doc["grades_moved"]["simulation"]["down"] >= 3  # a label of another feature
    both = sorted(set(la) & set(lb))
    assert c["pairs"] == len(both)
    assert c["relabelled"] == sum(la[f]["explanation"] != lb[f]["explanation"] for f in both)
    assert c["changed_meaning"] == sum(x["distance"] >= 0.3 for x in doc["rows"] if x["kind"] == "relabelled")
    moved = 0
    for f in both:
        for scorer, gb in lb[f]["scores"].items():
            ga = la[f]["scores"].get(scorer)
            if ga and ga["status"] == gb["status"] == "ok":
                moved += gb["ci"][1] < ga["ci"][0] or gb["ci"][0] > ga["ci"][1]
    assert c["grade"] == moved and c["grade_up"] + c["grade_down"] == moved
    impacts = [x["impact"] for x in doc["rows"]]
    assert impacts == sorted(impacts, reverse=True) and len(doc["rows"]) == sum(c[k] for k in ("added", "gone",
                                                                                                 "relabelled", "grade"))
    for x in doc["rows"]:
        if x["kind"] == "grade":  # moved beyond the intervals, both sides' grades as stored
            assert x["ci_b"][1] < x["ci_a"][0] or x["ci_b"][0] > x["ci_a"][1]
            assert x["value_a"] == la[x["feature_a"]]["scores"][x["scorer"]]["value"]
        if x["kind"] == "relabelled":
            assert x["label_a"] == la[x["feature_a"]]["explanation"] != x["label_b"] and 0 <= x["distance"] <= 2
    text = cli("diff", "--store", path, "--runs", a["run_id"], b["run_id"], "--limit", "3")
    assert text.exit_code == 0 and f"{c['added']} added, {c['gone']} gone" in text.stdout
    assert "10 features not in run B" in text.stdout and "10 features not in run A" in text.stdout
    assert len(text.stdout.strip().splitlines()) <= 4 + len(doc["grades_moved"]) + 3
    # --features narrows it: 15-34 holds 5 pairs of each kind of import, 5 features not in run A
    part = json.loads(cli("diff", "--store", path, "--runs", a["run_id"], b["run_id"], "--features", "15-34",
                          "--json").stdout)
    assert part["features"] == "15-34" and part["counts"]["pairs"] == 15 and part["counts"]["relabelled"] == 5
    assert (part["counts"]["not_in_a"], part["counts"]["not_in_b"]) == (5, 0)
    assert {x.get("feature_b", x.get("feature_a")) for x in part["rows"]} <= set(range(15, 35))


def test_diff_of_a_dictionary_and_its_retrained_copy_and_its_page(pair, tmp_path):
    from browser import page

    path, perm = pair
    for d in ("layers.3", "retrained"):
        assert cli("label", "--store", path, "--dictionary", d, "--scorer", "embedding").exit_code == 0
    evil = '<img src=x onerror="document.title=1">'
    moved = tmp_path / "moved.jsonl"  # one feature of the copy says something else now
    live_b = int(perm[5])
    moved.write_text(json.dumps({"feature_id": live_b, "explanation": evil + " dates in the distant past"}) + "\n")
    assert cli("ingest", "labels", moved, "--store", path, "--dictionary", "retrained", "--format",
               "jsonl").exit_code == 0
    r = cli("diff", "--store", path, "--dictionaries", "layers.3", "retrained", "--json", "--limit", "500",
            "--html", tmp_path / "page")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    with Store(path, read_only=True) as s:
        a, b = s.dictionary("layers.3"), s.dictionary("retrained")
        m = s.matches.pairs(a.dictionary_id, b.dictionary_id, "coactivation", 0.8)
        live = np.flatnonzero(s.activations.firing_counts(b.dictionary_id) > 0)
        live_a = np.flatnonzero(s.activations.firing_counts(a.dictionary_id) > 0)
    c = doc["counts"]
    assert c["added"] == len(set(live.tolist()) - set(m["to_feature"].tolist()))
    assert c["gone"] == len(set(live_a.tolist()) - set(m["from_feature"].tolist()))
    mine = [x for x in doc["rows"] if x["kind"] == "relabelled" and x["feature_b"] == live_b]
    assert len(mine) == 1 and mine[0]["feature_a"] == 5 and mine[0]["distance"] >= 0.3
    assert mine[0]["label_b"].startswith(evil) and c["changed_meaning"] >= 1
    # the page shows the same rows, the markup as text
    with page() as pg:
        pg.goto((tmp_path / "page" / "diff.html").as_uri())
        pg.wait_for_selector("body[data-ready='1']")
        assert pg.locator("#rows tr").count() == len(doc["rows"])
        assert pg.locator("#rows img").count() == 0 and pg.title() != "1"
        assert evil in pg.inner_text("#rows")
        pg.select_option("#kind", "relabelled")
        assert pg.locator("#rows tr").count() == sum(x["kind"] == "relabelled" for x in doc["rows"])


def test_diff_bad_input_is_one_line_and_writes_nothing(pair, tmp_path):
    path, _ = pair
    assert cli("label", "--store", path, "--dictionary", "layers.3", "--features", "0-9").exit_code == 0
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("not a diff page")
    before, files = _digest(path), sorted(tmp_path.iterdir())
    base = ["diff", "--store", path]
    _one_line_error(cli(*base), 2, "give either --runs RUN_A RUN_B or --dictionaries A B")
    _one_line_error(cli(*base, "--runs", "nope", "nope2"), 2, "no label or grade of run 'nope'")
    _one_line_error(cli(*base, "--dictionaries", "layers.3", "layers.3"), 2, "both sides are the same labels")
    runs = [json.loads(cli("label", "--store", path, "--dictionary", "layers.3", "--features", f, "--force",
                           "--json").stdout)["run_id"] for f in ("10-19", "15-16")]  # the second replaces labels
    before = _digest(path)
    _one_line_error(cli(*base, "--runs", *runs), 2, f"labelled under run {runs[0]}'s settings")
    _one_line_error(cli(*base, "--dictionaries", "layers.3", "nope"), 3, "no dictionary named 'nope'")
    _one_line_error(cli(*base, "--dictionaries", "layers.3", "retrained", "--min-similarity", "3"), 2,
                    "--min-similarity must be between -1 and 1")
    _one_line_error(cli(*base, "--dictionaries", "layers.3", "retrained", "--features", "0-99999"), 2,
                    "feature 99999 is out of range")
    _one_line_error(cli(*base, "--runs", *runs, "--features", "9-3"), 2, "the range 9-3 is reversed")
    _one_line_error(cli(*base, "--dictionaries", "layers.3", "retrained", "--html", tmp_path / "taken"), 8,
                    "is not an autointerp diff page")
    assert _digest(path) == before  # each was refused before the match was computed
    assert sorted(tmp_path.iterdir()) == files and [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]


def test_matches_lists_and_exports_the_pairs_a_match_stored(pair, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("autointerp.cli.match"), "MATCH_PAGE", 7)  # many pages, each read from where the last ended
    path, perm = pair
    assert cli("match", "--store", path, "--from", "layers.3", "--to", "retrained", "--method",
               "coactivation").exit_code == 0
    assert cli("label", "--store", path, "--dictionary", "layers.3", "--features", "0-9").exit_code == 0
    with Store(path, read_only=True) as s:
        m = s.matches.pairs(1, s.dictionary("retrained").dictionary_id, "coactivation")
        labels = {x["feature_id"]: x["explanation"] for x in s.labels.find(1)}
    stored = dict(zip(m["to_feature"].tolist(), zip(m["from_feature"].tolist(), m["similarity"].tolist())))
    base = ["matches", "--store", path, "--from", "layers.3", "--to", "retrained"]
    doc = json.loads(cli(*base, "--limit", "5", "--json").stdout)
    assert doc["total"] == len(stored) and len(doc["pairs"]) == 5
    every = json.loads(cli(*base, "--limit", "0", "--json").stdout)["pairs"]  # written a page at a time
    assert len(every) == len(stored) and every[:5] == doc["pairs"]
    inverse = np.argsort(perm)
    for p in every:
        assert (p["feature_a"], p["similarity"]) == (stored[p["feature_b"]][0], round(stored[p["feature_b"]][1], 4))
        assert p["label_a"] == labels.get(p["feature_a"]) and p["label_b"] is None and p["method"] == "coactivation"
    assert sum(p["feature_a"] == inverse[p["feature_b"]] for p in every) >= 0.9 * len(every)
    best = json.loads(cli(*base, "--sort", "similarity", "--min-similarity", "0.9", "--features", "0-99",
                          "--json").stdout)
    sims = [p["similarity"] for p in best["pairs"]]
    assert sims == sorted(sims, reverse=True) and min(sims) >= 0.9
    by_sim = json.loads(cli(*base, "--sort", "similarity", "--limit", "0", "--json").stdout)["pairs"]
    assert sorted((p["feature_b"], p["feature_a"]) for p in by_sim) == sorted((p["feature_b"], p["feature_a"]) for p in every)
    assert [p["similarity"] for p in by_sim] == sorted((p["similarity"] for p in by_sim), reverse=True)
    assert best["total"] == sum(f < 100 and v[1] >= 0.9 for f, v in stored.items()) == len(sims)
    text = cli(*base, "--limit", "3")
    lines = text.stdout.strip().splitlines()
    assert text.exit_code == 0 and f"{len(stored):,} coactivation pairs" in lines[0] and len(lines) == 5
    assert lines[1].split("\t") == ["feature_a", "feature_b", "similarity", "method", "label_a", "label_b"]
    _one_line_error(cli(*base, "--sort", "nope"), 2, "--sort 'nope' is not one of")
    _one_line_error(cli(*base, "--limit", "-1"), 2, "--limit must be 0 or more")
    _one_line_error(cli(*base, "--features", "5-2"), 2, "is reversed")
    _one_line_error(cli(*base, "--method", "decoder"), 9, "no decoder match from 'layers.3' to 'retrained'")
