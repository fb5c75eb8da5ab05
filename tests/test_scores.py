"""Scores you can rank by: intervals on every grade, intruder scoring, the sparse simulator, adaptive budgets."""

import json
import math

import numpy as np
import pytest
from loopback import Loopback, scripted
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.llm import ReplyFailure
from autointerp.records import Window
from autointerp.score import interval as ci
from autointerp.simulate import parse_sparse
from autointerp.store import Store, open_store


def _covered(make, truth: float, repeats: int = 300) -> float:
    """The share of seeded repeats whose 95% interval holds `truth`; `make(rng, i)` -> Interval."""
    rng = np.random.default_rng(7)
    hits = [(iv := make(rng, i)) is not None and iv.low <= truth <= iv.high for i in range(repeats)]
    return float(np.mean(hits))


def test_intervals_cover_the_true_value_in_about_95_percent_of_seeded_repeats():
    # AUROC of N(1, 1) against N(0, 1): Φ(1/√2)
    auc = 0.5 * (1 + math.erf(0.5))

    def auroc(rng, i):
        s = np.r_[rng.normal(1, 1, 50), rng.normal(0, 1, 50)]
        return ci.auroc(s, np.r_[np.ones(50), np.zeros(50)], ci.rng_for(0, i, "embedding"))

    # a simulation: 50 activating windows (a third of their tokens fire, Exp(1)), 50 silent ones, and a
    # prediction that is the truth plus noise; the population's pooled correlation from a large draw
    def windows(rng, n_act, n_neg):
        t = [rng.exponential(1, 32) * (rng.random(32) < 1 / 3) for _ in range(n_act)] + [np.zeros(32)] * n_neg
        return t, [x + rng.normal(0, 0.7, 32) for x in t]

    big_t, big_p = windows(np.random.default_rng(1), 20_000, 20_000)
    corr = float(np.corrcoef(np.concatenate(big_t), np.concatenate(big_p))[0, 1])

    def pooled(rng, i):
        t, p = windows(rng, 50, 50)
        return ci.pooled_correlation(ci.window_moments(t, p), np.r_[np.ones(50), np.zeros(50)],
                                     ci.rng_for(0, i, "simulation"))

    def balanced(rng, i):  # detection: right on 80% of activating windows and 60% of silent ones
        y = np.r_[np.ones(50), np.zeros(50)]
        right = np.r_[rng.random(50) < 0.8, rng.random(50) < 0.6]
        return ci.balanced_accuracy(right, y, ci.rng_for(0, i, "detection"))

    def accuracy(rng, i):  # intruder: 40 questions, 60% answered right
        return ci.accuracy(rng.random(40) < 0.6, ci.rng_for(0, i, "intruder"))

    for name, make, truth in (("auroc", auroc, auc), ("pooled correlation", pooled, corr),
                              ("balanced accuracy", balanced, 0.7), ("accuracy", accuracy, 0.6)):
        share = _covered(make, truth)
        assert 0.9 <= share <= 0.99, (name, share)
    # seeded: the same evidence and scorer give the same interval
    assert auroc(np.random.default_rng(3), 5) == auroc(np.random.default_rng(3), 5)


def _label(path, *args, features="0-7"):
    r = CliRunner().invoke(app, ["label", "--store", str(path), "--features", features, "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_every_grade_has_its_interval_evidence_and_rank_by_lower_bound(ingested_path, tmp_path):
    out = _label(ingested_path, "--scorer", "embedding,simulation,intruder")
    # features 0-3 detect a token; the rest fire densely, with no non-firing window to make a question of
    assert out["scores"]["intruder"] == {"ok": 3, "undefined": 5}
    with open_store(ingested_path, read_only=True) as s:
        rows = s.labels.find()
    for r in rows:
        for name, g in r["scores"].items():
            if g["status"] != "ok":
                continue
            lo, hi = g["ci"]
            assert lo <= g["value"] <= hi and hi - lo > 0, (name, g)
            assert g["n_windows"] > 0 and g["n_tokens"] >= g["n_windows"], (name, g)
    intr = [r["scores"]["intruder"] for r in rows if r["scores"]["intruder"]["status"] == "ok"]
    assert all(g["details"]["n_questions"] >= 10 and g["details"]["chance"] == 0.2 for g in intr)
    assert all(g["value"] > 0.6 for g in intr)  # token detectors: their windows share a token
    dense = [r["scores"]["intruder"] for r in rows if r["feature_id"] >= 4]
    assert all(g["status"] == "undefined" and "intruder questions" in g["reason"] for g in dense)
    # --by lower ranks by the interval's lower end
    for name, n in (("embedding", 4), ("simulation", 8)):
        res = CliRunner().invoke(app, ["labels", "--store", str(ingested_path), "--sort", name, "--by", "lower",
                                       "--json"])
        lows = [r["scores"][name]["ci"][0] for r in json.loads(res.stdout)["labels"] if r["scores"][name]["ci"]]
        assert lows == sorted(lows, reverse=True) and len(lows) == n
    text = CliRunner().invoke(app, ["labels", "--store", str(ingested_path), "--sort", "simulation", "--by", "lower"])
    head, first = text.stdout.splitlines()[:2]
    assert "simulation 95%" in head and first.split("\t")[head.split("\t").index("simulation 95%")].startswith("[")
    # exports: the interval in every grade, intruder apart from the label's grades
    path = tmp_path / "labels.jsonl"
    assert CliRunner().invoke(app, ["export", "--store", str(ingested_path), "--format", "jsonl",
                                    "--out", str(path)]).exit_code == 0
    line = json.loads(path.read_text().splitlines()[0])
    assert set(line["scores"]) == {"embedding", "simulation"} and set(line["feature_scores"]) == {"intruder"}
    g = line["scores"]["simulation"]
    assert g["ci_low"] <= g["value"] <= g["ci_high"] and g["n_windows"] == len(g["details"]["kinds"])
    np_dir = tmp_path / "np"
    assert CliRunner().invoke(app, ["export", "--store", str(ingested_path), "--format", "neuronpedia",
                                    "--out", str(np_dir), "--no-activations", "--model-id", "m",
                                    "--source-id", "3-res"]).exit_code == 0
    import gzip

    details = [json.loads(json.loads(x)["jsonDetails"]) for f in np_dir.rglob("explanation_scores/*.jsonl.gz")
               for x in gzip.open(f, "rt").read().splitlines()]
    assert {d["autointerp_level"] for d in details} == {"label", "feature"}
    assert all(d["ci_low"] is not None and d["n_windows"] > 0 for d in details)


def _window(tokens):
    return Window("quantile", 0, 0, tuple(tokens), tuple(range(len(tokens))), tuple(0.0 for _ in tokens))


def test_sparse_replies_are_parsed_strictly():
    wins = [_window([" the", " cat", " sat"]), _window(["<b>", " dog"])]
    got = parse_sparse('{"nonzero": [[1, 1, "cat", 7], [2, 0, "&lt;b&gt;", 2]]}', wins)
    assert got == [[0, 7, 0], [2, 0]]
    assert parse_sparse('Sure: {"nonzero": []}', wins) == [[0, 0, 0], [0, 0]]
    for reply, message in [('{"nonzero": [[3, 0, "x", 5]]}', "no window 3"),
                           ('{"nonzero": [[1, 3, "x", 5]]}', "tokens 0..2"),
                           ('{"nonzero": [[1, 1, "dog", 5]]}', "is ' cat'"),
                           ('{"nonzero": [[1, 1, "cat", 5], [1, 1, "cat", 6]]}', "listed twice"),
                           ('{"nonzero": [[1, 1, "cat", 0]]}', "from 1 to 10"),
                           ('{"nonzero": [[1, 1, "cat", 11]]}', "from 1 to 10"),
                           ('{"nonzero": [[1, 1, "cat", 5.5]]}', "must be"),
                           ('{"nonzero": [{"window": 1}]}', "must be"),
                           ('{"windows": []}', "no 'nonzero' list"), ("nothing fires", "no JSON")]:
        with pytest.raises(ReplyFailure, match=message):
            parse_sparse(reply, wins)


def _reply_chars(server, marker):
    return sum(len(x.get("reply", "")) for x in server.requests if marker in json.dumps(x["body"]))


def test_sparse_simulation_agrees_with_dense_at_a_fraction_of_the_output(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    base = ["--scorer", "simulation", "--scorer-model", "anthropic:sim-model", "--api-key-env", "K", "--rpm", "60000"]
    with Loopback(reply=scripted) as server:
        _label(ingested_path, *base, "--base-url", server.url)
        with open_store(ingested_path, read_only=True) as s:
            dense = {r["feature_id"]: r["scores"]["simulation"] for r in s.labels.find()}
        out = _label(ingested_path, *base, "--base-url", server.url, "--simulator", "simulate_sparse")
        assert out["graded"] == 8 and out["explained"] == 0  # a new simulator is a new scorer version: regraded
        with open_store(ingested_path, read_only=True) as s:
            sparse = {r["feature_id"]: r["scores"]["simulation"] for r in s.labels.find()}
        dense_out, sparse_out = _reply_chars(server, "simulating one feature") - _reply_chars(server, "List only"), \
            _reply_chars(server, "List only")
    assert all(sparse[f]["details"]["simulator"] == "sparse" for f in sparse)
    assert all(dense[f]["details"]["simulator"] == "json" for f in dense)
    # the scripted model predicts the same tokens either way: the same grades, a fifth of the output or less
    assert [sparse[f]["value"] for f in sorted(sparse)] == [dense[f]["value"] for f in sorted(dense)]
    assert dense_out >= 5 * sparse_out, (dense_out, sparse_out)


def test_llm_intruder_grades_the_feature_without_its_label(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=scripted) as server:
        out = _label(ingested_path, "--scorer", "intruder", "--scorer-model", "anthropic:judge", "--api-key-env", "K",
                     "--rpm", "60000", "--base-url", server.url, features="0-2")
        asked = [x["body"]["messages"][-1]["content"] for x in server.requests]
    assert out["scores"] == {"intruder": {"ok": 3}}
    assert all("<question id=" in a and "Feature description" not in a for a in asked)
    with open_store(ingested_path, read_only=True) as s:
        grades = [r["scores"]["intruder"] for r in s.labels.find()]
        # the label is never shown: another label of the same feature is graded from the cache, free
        from autointerp.pipeline import LabelRun, score_text
        from autointerp.llm import LLMOptions

    n_calls = len(asked)
    with Loopback(reply=scripted) as server, open_store(ingested_path) as s:
        run = LabelRun(scorers=("intruder",), scorer_model="anthropic:judge",
                       llm=LLMOptions(base_url=server.url, api_key_env="K", requests_per_minute=60000))
        _, (again,) = score_text(s, s.dictionary(), 0, 'the token "zebra"', run)
        assert server.count() == 0 and again.value == grades[0]["value"]
    assert n_calls == sum(-(-g["details"]["n_questions"] // 8) for g in grades)  # 8 questions (of 5 windows) a call
    # the scripted judge (the word most windows share) beats chance (0.2) on word-level triggers ("during",
    # "for"); "s" is a word piece it cannot see
    assert sorted(g["value"] for g in grades)[1] > 0.6 and all(g["details"]["k"] == 4 for g in grades)


def test_unusable_intruder_replies_are_typed_failures(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")

    def off_by_one(provider, body):  # names window 6 of 5
        doc = json.loads(scripted(provider, body))
        doc["answers"][0]["intruder"] = 6
        return json.dumps(doc)

    with Loopback(reply=off_by_one) as server:
        r = CliRunner().invoke(app, ["label", "--store", str(ingested_path), "--features", "0", "--scorer", "intruder",
                                     "--scorer-model", "anthropic:judge", "--api-key-env", "K", "--base-url",
                                     server.url, "--json"])
    assert r.exit_code == 22
    with open_store(ingested_path, read_only=True) as s:
        g = s.labels.find()[0]["scores"]["intruder"]
    assert g["status"] == "failed" and g["value"] is None and "intruder 6 is not one of its windows 1..5" in g["reason"]


def test_adaptive_budget_stops_once_the_interval_is_narrow(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    full = _label(ingested_path, "--scorer", "embedding,simulation")
    assert full["explained"] == 8
    out = _label(ingested_path, "--scorer", "embedding,simulation", "--adaptive", "0.15")
    assert out["graded"] == 8 and out["explained"] == 0
    with open_store(ingested_path, read_only=True) as s:
        rows = s.labels.find()
        versions = {g["version"] for r in rows for g in r["scores"].values()}
        grades = [g for r in rows for g in r["scores"].values() if "adaptive" in g["details"]]
    assert any("adaptive=0.15" in v for v in versions)
    for g in grades:
        a = g["details"]["adaptive"]
        assert a["units_used"] == g["n_windows"] <= a["units_available"]
        if a["stopped"] == "interval":
            assert (g["ci"][1] - g["ci"][0]) / 2 <= 0.15
    assert any(g["details"]["adaptive"]["stopped"] == "interval" and g["n_windows"] < 100 for g in grades)
    # an LLM scorer asks only for the rounds it needs
    with Loopback(reply=scripted) as server:
        args = ["--scorer", "detection", "--scorer-model", "anthropic:det", "--api-key-env", "K", "--rpm", "60000",
                "--base-url", server.url]
        _label(ingested_path, *args)
        every = server.count()
        _label(ingested_path, *args, "--adaptive", "0.1")
        adaptive = server.count() - every
    assert adaptive < every, (adaptive, every)


@pytest.mark.parametrize("args, code, message", [
    (["label", "--simulator", "explain_highlight"], 7, "a simulator needs simulate, simulate_sparse or simulate_prompt"),
    (["label", "--simulator", "nope"], 2, "no prompt template 'nope'"),
    (["label", "--adaptive", "2"], 2, "half-width in (0, 1)"),
    (["label", "--adaptive-cap", "40"], 2, "--adaptive-cap needs --adaptive"),
    (["label", "--intruder-k", "1"], 2, "intruder_k must be from 2 to 9"),
    (["labels", "--by", "upper"], 2, "--by"),
    (["labels", "--by", "lower"], 2, "give --sort SCORER"),
])
def test_bad_scoring_options_are_one_line_errors(ingested_path, args, code, message):
    r = CliRunner().invoke(app, [*args, "--store", str(ingested_path)])
    assert r.exit_code == code, r.output
    assert message in r.output and "Traceback" not in r.output
    with open_store(ingested_path, read_only=True) as s:
        assert s.labels.find() == []


def test_job_files_take_a_scoring_section(tmp_path):
    from autointerp.job.config import JobConfigError, parse_config

    cfg = parse_config('[scoring]\nmin_evidence = 5\nsimulator = "simulate_sparse"\nadaptive_target = 0.1\n'
                       'adaptive_cap = 60\n')
    sc = cfg.run.scoring
    assert sc.min_evidence == 5 and sc.simulator == "simulate_sparse" and sc.adaptive.target == 0.1
    assert sc.adaptive.cap == 60
    assert parse_config("[job]\nmin_evidence = 3\n").run.scoring.min_evidence == 3  # older job files
    for text, message in [("[scoring]\nadaptive_cap = 40\n", "need adaptive_target"),
                          ('[scoring]\nsimulator = "detect_json"\n', "a simulator needs"),
                          ("[scoring]\nn_boot = 10\n", "n_boot must be at least 100"),
                          ("[scoring]\nbogus = 1\n", "has no key 'bogus'"),
                          ("[job]\nmin_evidence = 3\n[scoring]\nmin_evidence = 4\n", "both [job] and [scoring]")]:
        with pytest.raises(JobConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_config(text)


runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


# -- minimum evidence ----------------------------------------------------------------------------------

def test_a_classification_grade_needs_enough_windows_of_each_class(ingested_path):
    out = json.loads(cli("score", "--store", ingested_path, "--feature", 0, "--explanation", "anything",
                         "--scorer", "embedding,simulation", "--n-nonfiring", "4", "--json").stdout)
    emb, sim = out["scores"]["embedding"], out["scores"]["simulation"]
    assert emb["status"] == "undefined" and emb["value"] is None
    assert "4 non-firing" in emb["reason"] and "at least 10 of each" in emb["reason"]
    assert emb["details"]["n_nonfiring"] == 4 and emb["details"]["n_activating"] > 10
    assert sim["details"]["n_nonfiring"] == 4 and sim["details"]["n_tokens"] > 0  # counts on every grade
    low = json.loads(cli("score", "--store", ingested_path, "--feature", 0, "--explanation", "anything",
                         "--scorer", "embedding", "--n-nonfiring", "4", "--min-evidence", "3", "--json").stdout)
    assert low["scores"]["embedding"]["status"] == "ok" and low["scores"]["embedding"]["details"]["min_evidence"] == 3


# -- the stored context encoding -----------------------------------------------------------------------

def test_context_encoding_is_paid_once_per_store(labelled_24):
    from autointerp.embed import ENCODING
    from autointerp.sample import Sampler
    from autointerp.score import make_scorers

    with open_store(labelled_24, read_only=True) as s:
        d = s.dictionary()
        assert len(s.vectors.encoded_contexts(d.corpus_id, ENCODING)) == s.corpus(d.corpus_id).n_contexts  # labelling kept them
    with Store(labelled_24) as s:  # as if a run had stopped half way
        with s.transaction() as w:
            w.raw.con.execute("DELETE FROM context_vectors WHERE context_id >= 100")
    kept = 100
    r = cli("encode", "--store", labelled_24, "--json")
    assert r.exit_code == 0, r.output
    with open_store(labelled_24, read_only=True) as s:
        n = s.corpus(d.corpus_id).n_contexts
        assert json.loads(r.output)["encoded"] == n - kept and len(s.vectors.encoded_contexts(d.corpus_id, ENCODING)) == n
        emb, = make_scorers(["embedding"], s, d)
        for smp in Sampler(s, d).sample_many(range(30, 40)):
            if smp.status == "ok":
                emb.score(smp, _expl(smp))
        assert emb.encoder.encoded == 0  # read from the store, never run through the model again
    again = cli("encode", "--store", labelled_24, "--json")
    assert json.loads(again.output)["encoded"] == 0


def _expl(smp):
    from autointerp.records import Explanation

    return Explanation(smp.dictionary, smp.feature, "a word", "given", "", smp.config, smp.seed)
