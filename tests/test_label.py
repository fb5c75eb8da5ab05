"""Labelling end to end on a synthetic store whose features 0..3 are known token detectors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from loopback import Loopback, explainer, scripted
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.explain.offline import Background, OfflineExplainer
from autointerp.ingest import ingest_delphi
from autointerp.pipeline import LabelRun, label
from autointerp.sample import Sampler
from autointerp.embed import ContextEncoder
from autointerp.score import SimulationScorer
from autointerp.store import open_store


def _ingested(store, delphi_cache):
    folder, facts = delphi_cache(n_seq=300)
    ingest_delphi(store, folder)
    return store.dictionary(), facts


def test_offline_label_names_the_trigger_token_and_beats_a_swapped_label(store, delphi_cache):
    d, facts = _ingested(store, delphi_cache)
    sampler = Sampler(store, d)
    bg = Background.from_store(store.activations, d.corpus_id)
    ex = OfflineExplainer(bg)
    sim = SimulationScorer(ContextEncoder(store.activations, store.vectors, d.corpus_id))
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
    out = label(store, d, LabelRun(features=feats, scorers=("embedding", "simulation"), flush_every=2, sample_batch=3))
    assert (out.explained, out.skipped, out.failed, out.already_done) == (3, 1, 0, 0)
    assert out.skipped_kinds == {"dead": 1} and out.scores["simulation"] == {"ok": 3}
    assert store.labels.label_summary(d.dictionary_id) == {"ok": 3, "skipped": 1}
    again = label(store, d, LabelRun(features=feats))
    assert again.already_done == 4 and again.explained == 0 and again.graded == 0
    forced = label(store, d, LabelRun(features=feats[:1], force=True))  # replaced, not duplicated
    assert forced.explained == 1 and len(store.labels.find(d.dictionary_id)) == 3
    rows = store.labels.find(d.dictionary_id, sort_by="simulation")
    vals = [r["scores"]["simulation"]["value"] for r in rows]
    assert vals == sorted(vals, reverse=True)
    for r in rows:
        assert r["explainer"] == "offline" and r["prompt_hash"] and r["sampler"]["window"] == 32
    path = tmp_path / "labels.jsonl"
    # the store is open for writing in this process: a reader works beside its writer
    res = CliRunner().invoke(app, ["export", "--store", str(store.path), "--out", str(path), "--json"])
    assert res.exit_code == 0, res.output
    beside = path.read_text()
    store.close()
    res = CliRunner().invoke(app, ["export", "--store", str(store.path), "--out", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert path.read_text() == beside
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert {"feature_id", "dictionary", "explanation", "scores", "explainer", "prompt_hash", "sampler", "seed",
                "created_at"} <= set(line)
        assert "simulation" in line["scores"]  # the forced one graded by the default scorers: simulation only


class _FlakyExplainer:
    """An explainer plugin (the pipeline takes any object with name, prompt_hash and explain): async,
    records how many features are in flight, fails some features and interrupts the run at one."""

    name, prompt_hash = "flaky", "v1"

    def __init__(self, fail=(), interrupt_at=None, delay=0.01):
        self.fail, self.interrupt_at, self.delay = set(fail), interrupt_at, delay
        self.in_flight = self.max_in_flight = 0
        self.calls = []

    async def explain(self, sample):
        import asyncio
        import signal

        from autointerp.errors import ExplainFailure
        from autointerp.records import Explanation

        self.calls.append(sample.feature)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if sample.feature == self.interrupt_at:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C: asyncio.run cancels the run, then raises
            await asyncio.sleep(self.delay)
            if sample.feature in self.fail:
                raise ExplainFailure("reply could not be parsed")
            return Explanation(sample.dictionary, sample.feature, f"feature {sample.feature}", self.name,
                               self.prompt_hash, sample.config, sample.seed)
        finally:
            self.in_flight -= 1


class _BrokenScorer:
    name, version = "broken", "v0"

    def score(self, sample, explanation):
        raise RuntimeError("scorer bug")


def test_bounded_concurrency_typed_failures_and_retry(store, delphi_cache):
    d, _ = _ingested(store, delphi_cache)
    ex = _FlakyExplainer(fail={3, 7})
    out = label(store, d, LabelRun(features=np.arange(40), explainer=ex, scorers=(_BrokenScorer(),), concurrency=5))
    assert ex.max_in_flight == 5  # async explainers overlap, never beyond the bound
    assert (out.explained, out.failed) == (38, 2) and out.failed_kinds == {"explainer": 2}
    assert out.scores == {"broken": {"failed": 38}}  # a scorer that raises fails the score, not the run
    assert out.score_failures == {"broken": {"RuntimeError": 38}}
    assert out.top_reasons(1) == [("broken: RuntimeError: scorer bug", 38)]
    row = store.labels.find(d.dictionary_id, [0])[0]
    assert row["scores"]["broken"]["status"] == "failed" and "scorer bug" in row["scores"]["broken"]["reason"]
    ex2 = _FlakyExplainer()
    again = label(store, d, LabelRun(features=np.arange(40), explainer=ex2, scorers=()))
    assert sorted(ex2.calls) == [3, 7] and again.already_done == 38  # only the failed ones are retried


def test_interrupted_run_keeps_finished_features_and_resumes(store, delphi_cache):
    import pytest

    import signal

    d, _ = _ingested(store, delphi_cache)
    ex = _FlakyExplainer(interrupt_at=25)
    # the handler Ctrl-C has in a terminal, installed here: a suite run in the background inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            label(store, d, LabelRun(features=np.arange(60), explainer=ex, scorers=(), concurrency=1, flush_every=10))
    finally:
        signal.signal(signal.SIGINT, previous)
    kept = set(store.labels.done_features(d.dictionary_id, ("flaky", "v1", ex_hash(), 0)).tolist())
    assert kept == set(range(25))  # all that finished before Ctrl-C: flushed ones and the tail alike
    ex2 = _FlakyExplainer()
    out = label(store, d, LabelRun(features=np.arange(60), explainer=ex2, scorers=()))
    assert sorted(ex2.calls) == list(range(25, 60)) and out.already_done == 25
    assert len(store.labels.find(d.dictionary_id)) == 60


def ex_hash():
    from autointerp.records import SamplerConfig

    return SamplerConfig().hash


def test_score_command_grades_any_text_on_the_held_out_set(store, delphi_cache):
    d, facts = _ingested(store, delphi_cache)
    bg = Background.from_store(store.activations, d.corpus_id)
    path = store.path
    store.close()
    runner = CliRunner()

    def score(text, feature=0, *extra):
        r = runner.invoke(app, ["score", "--store", str(path), "--feature", str(feature), "--explanation", text,
                                "--scorer", "embedding,simulation", "--json", *extra])
        return r.exit_code, (json.loads(r.stdout) if r.exit_code == 0 else r.output)

    trigger = bg.strings[int(facts["trigger_ids"][0])].strip()
    code, right = score(f'the token "{trigger}"')
    assert code == 0 and right["held_out"]["activating"] > 40 and right["held_out"]["nonfiring"] == 50
    assert set(right["scores"]) == {"embedding", "simulation"}
    code, wrong = score('the token "zebra"')
    assert right["scores"]["simulation"]["value"] > wrong["scores"]["simulation"]["value"] + 0.3
    assert score("   ")[0] == 2  # an empty label is a bad value: exit 2, as everywhere
    code, out = score("anything", 200)  # a dead feature has no held-out set
    assert code == 7 and "cannot be scored" in out and "dead" in out


def test_demo_labels_the_bundled_model_and_resumes(tmp_path):
    import subprocess
    import sys

    db, out = tmp_path / "demo.duckdb", tmp_path / "labels.jsonl"
    cmd = [sys.executable, "-m", "autointerp", "demo", "--store", str(db), "--out", str(out),
           "--max-tokens", "1500", "--json"]
    first = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    lab = first["label"]
    assert lab["features"] == 1536 and lab["explained"] > 1000 and lab["explained"] + lab["skipped"] == 1536
    assert first["captured"]["kind"] == "neurons" and first["corpus_licence"] == "PSF-2.0"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == lab["explained"] == first["lines"]
    best, worst = first["best"][0]["simulation"], first["worst"][0]["simulation"]
    assert best > 0.3 and worst < best
    assert all(line["explainer"] == "offline" and set(line["scores"]) == {"simulation"} for line in lines)
    again = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    assert again["captured"] is None and again["label"]["already_done"] == 1536 and again["lines"] == len(lines)
    text = subprocess.run(cmd[:-1], check=True, capture_output=True, text=True).stdout  # as a user reads it
    assert "1,536 features of" in text and "1,536 already done" in text and "best labels by simulation" in text


def test_a_reingest_relabels_only_the_features_whose_activations_changed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autointerp.ingest import ingest_parquet
    from autointerp.store import Store

    rng = np.random.default_rng(0)
    tok = rng.integers(0, 40, size=(200, 16))
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"context_id": np.arange(200), "token_ids": [list(map(int, r)) for r in tok],
                             "tokens": [[f"t{i}" for i in r] for r in tok]}), folder / "contexts.parquet")

    def write(bump: float, width: int = 6) -> None:  # feature f fires on token f; feature 2's values move by bump
        c, p = np.nonzero(tok < width)
        f = tok[c, p]
        v = 2.0 + (f == 2) * bump + 0.01 * p
        pq.write_table(pa.table({"feature": f, "context_id": c, "position": p, "value": v}),
                       folder / "activations.parquet")

    write(0.0)
    with Store(tmp_path / "s.duckdb") as s:
        ingest_parquet(s, folder, dictionary="d", width=6)
        first = label(s, s.dictionary("d"), LabelRun(scorers=()))
        assert first.explained == 6
        ingest_parquet(s, folder, dictionary="d", width=6, replace=True)  # the same activations again
        assert label(s, s.dictionary("d"), LabelRun(scorers=())).already_done == 6
        write(1.5)
        ingest_parquet(s, folder, dictionary="d", width=6, replace=True)
        again = label(s, s.dictionary("d"), LabelRun(scorers=()))
        assert (again.explained, again.already_done) == (1, 5)  # only feature 2 was labelled again
        assert len(s.labels.find(s.dictionary("d").dictionary_id)) == 6  # replaced, not added
        write(0.0, width=4)
        ingest_parquet(s, folder, dictionary="d", width=4, replace=True)  # shrunk: labels past the width go
        assert sorted(r["feature_id"] for r in s.labels.find(s.dictionary("d").dictionary_id)) == [0, 1, 2, 3]


runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


# -- grades follow the scorers -------------------------------------------------------------------------

def test_adding_a_scorer_grades_the_labels_without_explaining_again(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=scripted) as server:
        base = ["label", "--store", ingested_path, "--features", "0-5", "--explainer", "anthropic:claude-haiku-x",
                "--base-url", server.url, "--api-key-env", "K", "--rpm", "60000", "--json"]
        first = json.loads(cli(*base, "--scorer", "embedding").stdout)
        assert first["explained"] == 6 and first["graded"] == 0
        explains = server.count("/v1/messages")
        r = cli(*base, "--scorer", "embedding,simulation")
        assert r.exit_code == 0, r.output
        second = json.loads(r.stdout)
        assert (second["explained"], second["graded"], second["already_done"]) == (0, 6, 0)
        assert second["scores"] == {"embedding": {}, "simulation": {"ok": 6}}  # embedding was there already
        assert server.count("/v1/messages") == explains  # no explainer call: simulation is offline here
        third = json.loads(cli(*base, "--scorer", "embedding,simulation").stdout)
        assert third["already_done"] == 6 and third["graded"] == 0
        # an LLM scorer is a scorer of its own (name, version, model): the labels get it, the explainer is not asked
        fourth = json.loads(cli(*base, "--scorer", "detection", "--scorer-model", "anthropic:judge-x").stdout)
        assert (fourth["explained"], fourth["graded"]) == (0, 6)
        bodies = [r["body"] for r in server.requests[explains:]]
        assert bodies and all(b["model"] == "judge-x" for b in bodies)
    with open_store(ingested_path, read_only=True) as s:
        rows = s.labels.find(s.dictionary().dictionary_id)
    assert len(rows) == 6 and all(set(r["scores"]) == {"embedding", "simulation", "detection"} for r in rows)


class _Versioned:
    """A scorer plugin whose version the test changes: a new version regrades."""

    name = "plugin"

    def __init__(self, version):
        self.version, self.calls = version, 0

    def score(self, sample, explanation):
        from autointerp.records import Score

        self.calls += 1
        return Score(self.name, self.version, "ok", float(len(self.version)), "", {"v": self.version})


def test_a_new_scorer_version_regrades_and_a_failed_grade_is_retried(store, delphi_cache):
    from autointerp.ingest import ingest_delphi

    folder, _ = delphi_cache(n_seq=200)
    ingest_delphi(store, folder)
    d = store.dictionary()
    v1 = _Versioned("v1")
    label(store, d, LabelRun(features=range(4), scorers=(v1,)))
    assert v1.calls == 4
    again = _Versioned("v1")
    out = label(store, d, LabelRun(features=range(4), scorers=(again,)))
    assert again.calls == 0 and out.already_done == 4
    v2 = _Versioned("v2.0")
    out = label(store, d, LabelRun(features=range(4), scorers=(v2,)))
    assert v2.calls == 4 and (out.explained, out.graded) == (0, 4)
    row = store.labels.find(d.dictionary_id, [0])[0]
    assert row["scores"]["plugin"]["version"] == "v2.0" and row["scores"]["plugin"]["value"] == 4.0

    class Broken(_Versioned):
        def score(self, sample, explanation):
            raise RuntimeError("down")

    out = label(store, d, LabelRun(features=range(4), scorers=(Broken("b1"),)))
    assert out.graded == 4 and out.failed_grades == 4 and out.top_reasons(1)[0][0].startswith("plugin: RuntimeError")
    fixed = _Versioned("b1")
    out = label(store, d, LabelRun(features=range(4), scorers=(fixed,)))  # the failed grades are retried, replaced
    assert fixed.calls == 4 and out.failed_grades == 0
    n = store.query("SELECT count(*) FROM scores WHERE scorer_version = 'b1'").fetchone()[0]
    assert n == 4


# -- honest outcomes -----------------------------------------------------------------------------------

def test_every_feature_failing_is_exit_22_with_the_reasons_and_labels_lists_them(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback() as server:
        url = server.url
    # the server is gone: every call fails to connect
    r = cli("label", "--store", ingested_path, "--features", "0-3", "--explainer", "anthropic:claude-haiku-4-5",
            "--base-url", url, "--api-key-env", "K", "--scorer", "", "--rpm", "60000")
    assert r.exit_code == 22, r.output
    # the first calls spend their retries; once the failures span 10 s the rest are refused unsent
    unreachable = ("explainer: provider: connection failed", "explainer: provider: not sent: the server is unreachable")
    assert "4 failed" in r.stdout and any(f"x {u}" in r.stderr for u in unreachable), r.stderr
    assert "Traceback" not in r.output
    listed = cli("labels", "--store", ingested_path, "--status", "failed", "--json")
    rows = json.loads(listed.stdout)["features"]
    assert sorted(x["feature_id"] for x in rows) == [0, 1, 2, 3]
    assert all(x["reason"].startswith(unreachable) for x in rows), rows
    text = cli("labels", "--store", ingested_path, "--status", "failed").stdout.splitlines()
    assert text[0] == "feature\texplainer\tseed\treason" and len(text) == 5


@pytest.mark.parametrize("signum", [2, 15])  # Ctrl-C, and SIGTERM (a scheduler's stop)
def test_an_interrupted_label_is_exit_23_and_keeps_what_finished(ingested_path, monkeypatch, signum):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=explainer, latency=0.05) as server:
        cmd = [sys.executable, "-m", "autointerp", "label", "--store", str(ingested_path), "--features", "0-59",
               "--explainer", "anthropic:claude-haiku-4-5", "--base-url", server.url, "--api-key-env", "K",
               "--scorer", "", "--concurrency", "2", "--rpm", "60000"]
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=_default_sigint)
        _wait_for(lambda: server.count("/v1/messages") >= 10 or child.poll() is not None)
        child.send_signal(signum)
        out, err = child.communicate(timeout=60)
    assert child.returncode == 23, err[-2000:]
    # progress status lines (every ~10 s when not on a terminal) may come first; the outcome is one line
    said = [x for x in err.splitlines() if x.startswith("interrupted: ")]
    assert len(said) == 1 and "run again to go on" in said[0] and "Traceback" not in err, err[-2000:]
    with open_store(ingested_path, read_only=True) as s:
        assert 0 < len(s.labels.find()) < 60


def _default_sigint():
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background suite may inherit SIGINT ignored


def _wait_for(cond, timeout=60.0):
    import threading
    import time

    deadline, tick = time.monotonic() + timeout, threading.Event()
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        tick.wait(0.01)
