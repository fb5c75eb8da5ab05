import json

import numpy as np
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.errors import UsageError
from autointerp.ingest import ingest_delphi
from autointerp.records import SamplerConfig
from autointerp.sample import Sampler
from autointerp.store import open_store


@pytest.fixture
def sampled(store, delphi_cache):
    folder, facts = delphi_cache(n_seq=600)
    ingest_delphi(store, folder)
    return store, store.dictionary(), facts


def _overlaps(a, b):
    return a.context_id == b.context_id and a.start < b.start + len(b.tokens) and b.start < a.start + len(a.tokens)


def test_explain_and_score_never_share_a_window(sampled):
    store, d, _ = sampled
    sampler = Sampler(store, d, seed=3)
    checked = 0
    for f in range(d.width):
        fs = sampler.sample(f)
        if fs.status != "ok":
            continue
        checked += 1
        for e in fs.explain:
            for s in fs.score:
                assert not _overlaps(e, s), (f, e.context_id, e.start, s.start)
                assert not np.array_equal(e.token_ids, s.token_ids)
        wins = fs.explain + fs.score
        assert len({(w.context_id, w.start) for w in wins}) == len(wins)
    assert checked > 200


def test_windows_follow_the_documented_rules(sampled):
    store, d, facts = sampled
    cfg = SamplerConfig()
    fs = Sampler(store, d, cfg, seed=0).sample(0)  # a token detector: fires where trigger 0 occurs
    assert fs.status == "ok" and fs.n_candidates >= cfg.n_top + cfg.n_quantile_explain + cfg.n_score_activating
    tops = [w for w in fs.explain if w.kind == "top"]
    assert len(tops) == cfg.n_top
    assert [w.peak for w in tops] == sorted((w.peak for w in tops), reverse=True)
    for w in fs.explain + fs.score:
        assert len(w.tokens) == len(w.activations) == cfg.window
    for w in tops:
        peak_at = int(np.argmax(w.activations))
        if 0 < w.start < 64 - cfg.window:  # not clamped at a context edge
            assert peak_at == cfg.offset
        assert w.token_ids[peak_at] == facts["trigger_ids"][0]
    quantile = [w for w in fs.explain if w.kind == "quantile"]
    assert len(quantile) == cfg.n_quantile_explain
    assert min(w.peak for w in tops) >= max(w.peak for w in quantile)
    held = [w for w in fs.score if w.kind == "quantile"]
    rand = [w for w in fs.score if w.kind == "random"]
    assert all(w.peak > 0 for w in held) and len(rand) == cfg.n_score_nonfiring
    assert all(max(w.activations) == 0 for w in rand)


def test_deterministic_and_independent_of_batching(sampled):
    store, d, _ = sampled
    a = Sampler(store, d, seed=7).sample(17)
    assert Sampler(store, d, seed=7).sample(17) == a
    assert Sampler(store, d, seed=8).sample(17).score != a.score
    s = Sampler(store, d, seed=7, max_rows=5000)  # many small chunks, on several threads
    out = s.sample_all(workers=3)
    assert out["features"] == d.width and out["dead"] == 2
    assert s.load(17).explain == a.explain and s.load(17).score == a.score
    assert store.samples.sample_summary(d.dictionary_id)["dead"] == 2
    stored = store.query("SELECT * EXCLUDE (created_at) FROM sample_status ORDER BY feature").fetchall()
    windows = store.query("SELECT * FROM samples ORDER BY ALL").fetchall()
    Sampler(store, d, seed=7).sample_all(workers=1)  # one chunk, this thread only
    assert store.query("SELECT * EXCLUDE (created_at) FROM sample_status ORDER BY feature").fetchall() == stored
    assert store.query("SELECT * FROM samples ORDER BY ALL").fetchall() == windows


def test_batched_samples_equal_one_at_a_time(sampled):
    store, d, _ = sampled
    feats = [200, 3, 17, 40, 41, 42, 150, 0]  # unsorted, scattered, with a dead one
    one = {f: Sampler(store, d, seed=5).sample(f) for f in feats}
    s = Sampler(store, d, seed=5, max_rows=3000)  # several chunks
    many = s.sample_many(feats)
    assert [m.feature for m in many] == sorted(feats)
    assert all(m == one[m.feature] for m in many)
    assert many[-1].status == "dead" and not many[-1].explain
    s.sample_all(np.array(feats))
    for m in many:
        stored = s.load(m.feature)
        assert (stored.status, stored.explain, stored.score) == (m.status, m.explain, m.score)


def test_dead_and_rare_features_are_reported(sampled):
    store, d, _ = sampled
    dead = Sampler(store, d).sample(200)
    assert dead.status == "dead" and "never fires" in dead.reason and not dead.explain
    rare = Sampler(store, d, SamplerConfig(min_windows=10_000)).sample(5)
    assert rare.status == "too_rare" and "min_windows=10000" in rare.reason
    with pytest.raises(UsageError, match="out of range"):
        Sampler(store, d).sample(d.width)


def test_rare_feature_keeps_a_held_out_set(sampled):
    store, d, _ = sampled
    cfg = SamplerConfig(n_top=100, n_quantile_explain=100, n_score_activating=200)  # more than feature 1 has
    fs = Sampler(store, d, cfg).sample(1)
    assert fs.status == "ok" and fs.n_candidates < 400
    held = sum(w.kind == "quantile" for w in fs.score)
    tops = sum(w.kind == "top" for w in fs.explain)
    # budgets shrink in proportion: about half of the windows stay held out
    assert held >= fs.n_candidates * 0.4 and tops == fs.n_candidates * 100 // 400
    assert "held-out activating windows" in fs.reason


def test_repeated_text_is_deduplicated(store, tmp_path, minilm):
    from autointerp.ingest.synthetic import SyntheticCache, write_delphi_cache

    folder = tmp_path / "dup"
    facts = write_delphi_cache(folder, SyntheticCache(n_seq=60, ctx_len=64, width=8, l0=1, n_splits=1,
                                                      model_name=str(minilm), n_token_features=1,
                                                      vocab=(2000, 2030), seed=4))
    # make every context a copy of context 0: all windows around a trigger repeat the same text
    from safetensors.numpy import load_file, save_file

    shard = next(folder.glob("*.safetensors"))
    data = load_file(str(shard))
    data["tokens"][:] = data["tokens"][0]
    loc = data["locations"]
    keep = loc[:, 2] == 0
    trig = np.flatnonzero(data["tokens"][0] == facts["trigger_ids"][0])
    seqs = np.repeat(np.arange(60), len(trig))
    data["locations"] = np.stack([seqs, np.tile(trig, 60), np.zeros_like(seqs)], 1).astype(np.uint16)
    data["activations"] = np.linspace(1, 2, len(seqs)).astype(np.float16)
    save_file(data, str(shard))
    ingest_delphi(store, folder)
    fs = Sampler(store, store.dictionary(), SamplerConfig(min_windows=2)).sample(0)
    act = [tuple(w.token_ids.tolist()) for w in fs.explain + fs.score if w.kind in ("top", "quantile")]
    assert len(act) == len(set(act)) and len(act) <= len(trig) * 3
    assert keep.any()


runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


# -- stored samples ------------------------------------------------------------------------------------

def test_label_reads_the_samples_sample_all_stored_under_its_config(ingested_path):
    opts = ["--n-score", "30", "--n-nonfiring", "30", "--seed", "3"]
    assert cli("sample", "--store", ingested_path, "--all", "--features", "0-9", *opts).exit_code == 0
    out = json.loads(cli("label", "--store", ingested_path, "--features", "0-9", "--scorer", "embedding", *opts,
                         "--json").stdout)
    assert out["samples_stored"] == 10 and out["samples_drawn"] == 0
    with open_store(ingested_path, read_only=True) as s:
        row = s.labels.find(s.dictionary().dictionary_id, [0])[0]
        assert row["sampler"]["n_score_activating"] == 30 and row["seed"] == 3
        d = s.dictionary()
        from autointerp.records import SamplerConfig
        from autointerp.sample import Sampler

        cfg = SamplerConfig(n_score_activating=30, n_score_nonfiring=30)
        sampler = Sampler(s, d, cfg, 3)
        assert sampler.load_many([0, 5]) == sampler.sample_many([0, 5])  # the stored sample is the drawn one
    other = cli("label", "--store", ingested_path, "--features", "0-9", "--scorer", "embedding", "--json")
    other = json.loads(other.stdout)  # default sampler: nothing stored under it, and the summary says why
    assert other["samples_stored"] == 0 and other["samples_drawn"] == 10 and other["explained"] > 0
    assert other["samples_not_current"] == 10
    text = cli("label", "--store", ingested_path, "--features", "0-9", "--scorer", "embedding", "--seed", "4").stdout
    assert "samples: 0 read from the store, 10 drawn (10 stored under another sampler config or seed" in text
