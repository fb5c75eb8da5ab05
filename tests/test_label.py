"""Labelling end to end on a synthetic store whose features 0..3 are known token detectors."""

import json

import numpy as np
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.explain.offline import Background, OfflineExplainer
from autointerp.ingest import ingest_delphi
from autointerp.pipeline import label
from autointerp.sample import Sampler
from autointerp.score.embed import ContextEncoder
from autointerp.score.offline import SimulationScorer


def _ingested(store, delphi_cache):
    folder, facts = delphi_cache(n_seq=300)
    ingest_delphi(store, folder)
    return store.dictionary(), facts


def test_offline_label_names_the_trigger_token_and_beats_a_swapped_label(store, delphi_cache):
    d, facts = _ingested(store, delphi_cache)
    sampler = Sampler(store, d)
    bg = Background.from_store(store, d.corpus_id)
    ex = OfflineExplainer(bg)
    sim = SimulationScorer(ContextEncoder(store, d.corpus_id))
    own_beats = 0
    for f in range(4):
        s = sampler.sample(f)
        e = ex.explain(s)
        trigger = bg.strings[int(facts["trigger_ids"][f])].strip()
        assert json.dumps(trigger) in e.text, (f, e.text)
        assert e.evidence["top"][0]["kind"] in ("token", "bigram")
        other = ex.explain(sampler.sample((f + 1) % 4))
        own, swapped = sim.score(s, e), sim.score(s, other)
        assert own.status == "ok" and len(own.details["per_window_correlation"]) == len(s.score)
        own_beats += own.value > (swapped.value if swapped.value is not None else -1)
    assert own_beats == 4


def test_label_resumes_skips_rare_and_exports(store, delphi_cache, tmp_path):
    d, _ = _ingested(store, delphi_cache)
    feats = np.array([0, 1, 2, 200])  # 200 is dead
    out = label(store, d, feats, scorers=("embedding", "simulation"), batch=2)
    assert (out["ok"], out["skipped"], out["failed"], out["already_done"]) == (3, 1, 0, 0)
    assert store.label_summary(d.dictionary_id) == {"ok": 3, "skipped": 1}
    again = label(store, d, feats)
    assert again["already_done"] == 4 and again["ok"] == 0
    forced = label(store, d, feats[:1], force=True)  # replaced, not duplicated
    assert forced["ok"] == 1 and len(store.labels(d.dictionary_id)) == 3
    rows = store.labels(d.dictionary_id, sort_by="simulation")
    vals = [r["scores"]["simulation"]["value"] for r in rows]
    assert vals == sorted(vals, reverse=True)
    for r in rows:
        assert r["explainer"] == "offline" and r["prompt_hash"] and r["sampler"]["window"] == 32
    path = tmp_path / "labels.jsonl"
    res = CliRunner().invoke(app, ["export", "--store", str(store.path), "--out", str(path)])
    assert res.exit_code != 0  # the store is open for writing in this process: a clear error, not a crash
    store.close()
    res = CliRunner().invoke(app, ["export", "--store", str(store.path), "--out", str(path), "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert {"feature_id", "dictionary", "explanation", "scores", "explainer", "prompt_hash", "sampler", "seed",
                "created_at"} <= set(line)
        assert set(line["scores"]) == {"embedding", "simulation"}
