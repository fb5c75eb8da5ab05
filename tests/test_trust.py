"""Numbers that never mislead: grades follow the scorers, spend is counted once, outcomes and exit codes
are honest, grades rest on enough evidence, bad input is one line before any SQL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.pipeline import LabelRun, label
from autointerp.store import Store, open_store
from loopback import Loopback, explainer, scripted

runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _one_line_error(r, code: int, message: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output, r.output


# -- grades follow the scorers ----------------------------------------------------------------------

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


def test_a_job_that_gains_a_scorer_grades_and_the_ledger_counts_it(tmp_path, ingested_path):
    cfg = tmp_path / "job.toml"
    cfg.write_text('[job]\nfeatures = "0-7"\nscorers = ["embedding"]\n')
    cmd = ["job", "run", "--store", ingested_path, "--config", cfg, "--json"]
    first = json.loads(cli(*cmd).stdout)
    assert first["status"] == "done" and first["summary"]["explained"] + first["summary"]["skipped"] == 8
    cfg.write_text('[job]\nfeatures = "0-7"\nscorers = ["embedding", "simulation"]\n')
    r = cli(*cmd)
    assert r.exit_code == 0, r.output
    second = json.loads(r.stdout)
    assert second["summary"]["explained"] == 0 and second["summary"]["graded"] == first["summary"]["explained"]
    runs = json.loads(cli("job", "list", "--store", ingested_path, "--json").stdout)["runs"]
    assert runs[0]["features_graded"] == second["summary"]["graded"] and runs[0]["features_done"] == 0
    assert runs[1]["features_graded"] == 0 and runs[1]["features_done"] == first["summary"]["explained"]


# -- stored samples ---------------------------------------------------------------------------------

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


# -- spend counted once -----------------------------------------------------------------------------

def test_best_of_k_on_anthropic_is_k_requests_and_a_retry_resends_only_the_failed_one(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=explainer) as server:
        server.fault("ok", "ok", "400")  # the third candidate of the first feature fails, not retryably
        base = ["label", "--store", ingested_path, "--features", "0", "--explainer", "anthropic:claude-haiku-4-5",
                "--base-url", server.url, "--api-key-env", "K", "--rpm", "60000", "--candidates", "3",
                "--scorer", "embedding", "--json"]
        r = cli(*base)
        assert r.exit_code == 22 and "candidate" in r.stderr and "HTTP 400" in r.stderr
        assert server.count("/v1/messages") == 3 and all(b["body"].get("n") is None for b in server.requests)
        r = cli(*base)
        assert r.exit_code == 0, r.output
        assert server.count("/v1/messages") == 4  # only the failed candidate was sent again
        out = json.loads(r.stdout)
        assert out["explained"] == 1
    with open_store(ingested_path, read_only=True) as s:
        calls = s.query("SELECT count(*) FILTER (NOT cached AND status = 'ok'), count(*) FILTER (cached), "
                              "count(*) FILTER (status = 'error'), sum(cost_usd) FILTER (NOT cached) > 0, "
                              "count(DISTINCT cache_key) FROM llm_calls").fetchone()
        assert calls == (3, 2, 1, True, 3)  # 3 paid replies, each priced; the rerun's 2 cache hits free
        assert len(s.labels.find(s.dictionary().dictionary_id, candidates=True)) == 3


def test_an_unpriced_model_cannot_hold_a_dollar_budget_and_is_shown_unpriced(tmp_path, ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    before = _digest(ingested_path)
    with Loopback(reply=explainer) as server:
        cfg = tmp_path / "job.toml"
        body = (f'[job]\nexplainer = "anthropic:my-finetune"\nscorers = []\nfeatures = "0-2"\n'
                f'[limits]\nbase_url = "{server.url}"\napi_key_env = "K"\nrpm = 60000\n')
        cfg.write_text(body + "[budget]\ndollars = 1.0\n")
        r = cli("job", "run", "--store", ingested_path, "--config", cfg)
        _one_line_error(r, 20, "anthropic:my-finetune has no price")
        assert server.count() == 0 and _digest(ingested_path) == before
        cfg.write_text(body + '[prices]\n"my-finetune" = [1.0, 5.0, 0.1, 1.25]\n[budget]\ndollars = 1.0\n')
        r = cli("job", "run", "--store", ingested_path, "--config", cfg, "--json")
        assert r.exit_code == 0, r.output
        cfg.write_text(body.replace("0-2", "3-5"))  # no price, no budget: runs, and is shown as unpriced
        assert cli("job", "run", "--store", ingested_path, "--config", cfg).exit_code == 0
        bad = tmp_path / "bad.toml"
        bad.write_text(body + '[prices]\n"my-finetune" = [1.0, "five"]\n')
        _one_line_error(cli("job", "run", "--store", ingested_path, "--config", bad), 20, "[prices]")
    r = cli("cost", "--store", ingested_path)
    assert "unpriced" in r.stdout and "3 unpriced calls" in r.stdout.splitlines()[-1]
    doc = json.loads(cli("cost", "--store", ingested_path, "--json").stdout)
    assert doc["unpriced_calls"] == 3 and doc["total_usd"] > 0


# -- honest outcomes --------------------------------------------------------------------------------

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


# -- minimum evidence -------------------------------------------------------------------------------

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


# -- errors before SQL ------------------------------------------------------------------------------

@pytest.mark.parametrize("args,code,message", [
    (["labels", "--limit", "-3"], 2, "--limit must be a positive number"),
    (["features", "--limit", "-3"], 2, "--limit must be a positive number"),
    (["job", "list", "--limit", "-1"], 2, "--limit must be a positive number"),
    (["labels", "--sort", "bogus"], 2, "--sort 'bogus' is not one of: feature, embedding"),
    (["features", "--sort", "bogus"], 2, "--sort 'bogus' is not one of: feature, density, max"),
    (["labels", "--status", "maybe"], 2, "--status 'maybe' is not one of"),
    (["label", "--features", "5-2"], 2, "the range 5-2 is reversed (did you mean 2-5?)"),
    (["label", "--features", "0-x"], 2, "bad feature list"),
    (["label", "--features", "999999"], 7, "feature 999999 is out of range"),
    (["label", "--scorer", "bogus"], 7, "unknown scorer bogus"),
    (["label", "--explainer", "nope"], 7, "unknown explainer 'nope'"),
    (["label", "--window", "1"], 6, "window must be at least 2"),
    (["label", "--concurrency", "0"], 2, "concurrency must be at least 1"),
    (["label", "--features", "0-5000000000"], 2, "5000000000 is beyond any dictionary"),
    (["label", "--features", "0-4000000000"], 7, "feature 4000000000 is out of range"),  # no 4e9-long list made
    (["label", "--candidates", "0"], 2, "--candidates must be at least 1"),
    (["label", "--rpm", "-5"], 2, "--rpm must be a positive number, got -5"),
    (["label", "--otpm", "0"], 2, "--otpm must be a positive number, got 0"),
    (["label", "--max-in-flight", "-1"], 2, "--max-in-flight must be at least 1, got -1"),
    (["label", "--timeout", "-1"], 2, "--timeout must be a positive number"),
    (["label", "--base-url", "notaurl"], 2, "--base-url must be an http:// or https:// URL"),
    (["cost", "--run", "nosuchrun"], 2, "--run 'nosuchrun': no LLM call of that run"),
    (["export", "--out", "/nonexistent-dir/x.jsonl"], 8, "folder /nonexistent-dir does not exist"),
    (["export", "--format", "parquet", "--out", "/"], 8, "is a folder: this format writes one file"),
    (["export", "--format", "html", "--features", "99999", "--out", "/nonexistent-dir/h"], 8,
     "folder /nonexistent-dir does not exist"),
    (["sample", "--all", "--features", "0-99999"], 6, "feature 99999 is out of range"),
    (["label", "--prices", "/nonexistent.json"], 7, "cannot read prices"),
    (["label", "--bogus-option"], 2, "No such option: --bogus-option"),
    (["sample", "--all", "--features", "9-3"], 2, "reversed"),
    (["show", "--feature", "99999"], 6, "out of range"),
    (["score", "--feature", "99999", "--explanation", "x"], 7, "out of range"),
    (["export", "--format", "xml", "--out", "x"], 2, "--format 'xml' is not one of"),
    (["export", "--dictionary", "nope", "--out", "x.jsonl"], 3, "no dictionary named 'nope'"),
    (["export", "--format", "neuronpedia", "--out", "x"], 8, "needs --model-id and --source-id"),
    (["job", "show", "zzz"], 3, "no single job run matches"),
    (["job", "run", "--config", "/dev/null", "--wait", "-1"], 2, "--wait must be 0 or more seconds"),
    (["label", "--batch-poll", "0"], 2, "--batch-poll must be a positive number"),
    (["labels", "--status", "failed", "--sort", "embedding"], 2, "--status failed lists features without a label"),
    (["job", "run", "--config", "/dev/null", "--log", "/nonexistent-dir/job.log"], 20,
     "--log /nonexistent-dir/job.log: folder /nonexistent-dir does not exist"),
])
def test_bad_input_is_one_line_a_documented_code_and_changes_nothing(ingested_path, args, code, message):
    before = _digest(ingested_path)
    r = cli(*args, "--store", ingested_path)
    _one_line_error(r, code, message)
    assert _digest(ingested_path) == before


def test_a_missing_store_is_an_error_not_an_empty_file(tmp_path):
    missing = tmp_path / "typo.duckdb"
    for args in (["label"], ["labels"], ["sample", "--all"], ["features"], ["show", "--feature", "0"]):
        _one_line_error(cli(*args, "--store", missing), 3, f"no store at {missing}")
    cfg = tmp_path / "job.toml"
    cfg.write_text("[job]\nscorers = []\n")
    _one_line_error(cli("job", "run", "--store", missing, "--config", cfg), 20, "no store at")
    assert list(tmp_path.iterdir()) == [cfg]


def test_a_failed_ingest_or_capture_into_a_new_path_leaves_no_file(tmp_path, minilm):
    new = tmp_path / "new.duckdb"
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("ingest", "delphi", empty, "--store", new)
    assert r.exit_code == 4 and len(r.stderr.strip().splitlines()) == 1
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one line of text\n")
    r = cli("capture", "--corpus", corpus, "--neurons", "no.such.module", "--model", minilm, "--store", new)
    assert r.exit_code == 5 and len(r.stderr.strip().splitlines()) == 1
    r = cli("demo", "--store", new, "--max-tokens", "-5", "--out", tmp_path / "x.jsonl")
    _one_line_error(r, 2, "--max-tokens must be at least 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "empty"]


def _digest(path) -> str:
    with Store(path, read_only=True) as s:
        return s.content_digest()


# -- terminal habits --------------------------------------------------------------------------------

def test_show_version_env_store_and_the_exit_code_table(ingested_path):
    label_out = cli("label", "--store", ingested_path, "--features", "0-1", "--scorer", "embedding")
    assert label_out.exit_code == 0, label_out.output
    r = cli("show", "--feature", 0, env={"AUTOINTERP_STORE": str(ingested_path)})  # --store from the environment
    assert r.exit_code == 0, r.output
    text = r.stdout
    assert "feature 0 of" in text and "label: " in text and "embedding" in text and "<<" in text
    assert "activating" in text and "nonfiring" in text  # the evidence the grade rests on
    doc = json.loads(cli("show", "--store", ingested_path, "--feature", 0, "--json").stdout)
    assert doc["labels"][0]["chosen"] and doc["stats"]["n_firing"] > 0
    from autointerp.errors import EXIT_CODES

    v = cli("--version")
    assert v.exit_code == 0 and v.stdout.startswith("autointerp ")
    helptext = cli("--help").stdout
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:].isdigit()]
    assert table == [f"| {code} | {what} |" for code, what in EXIT_CODES.items()]  # README's table is EXIT_CODES
    for code in EXIT_CODES:
        assert f"{code}: " in helptext


def test_a_piped_run_prints_a_status_line(tmp_path):
    import io

    from autointerp.progress import Progress

    out = io.StringIO()
    p = Progress(100, "label d", "feat", tty=False, every=0.0, stream=out)
    p.update(40, "40 explained")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("label d: 40/100 feat (40%)") and lines[0].endswith("; 40 explained")
    quiet = io.StringIO()
    q = Progress(100, "label d", "feat", enabled=False, tty=False, every=0.0, stream=quiet)
    q.update(100)
    q.close()
    assert quiet.getvalue() == ""
    open_ended = io.StringIO()  # no total (capture without --max-tokens): a count, no fraction
    r = Progress(None, "capture d", "tok", tty=False, every=0.0, stream=open_ended)
    r.update(640)
    r.close()
    assert open_ended.getvalue().splitlines()[0].startswith("capture d: 640 tok, ")


def test_ingest_then_label_through_the_installed_command_with_env_store(tmp_path, ingested_path):
    env = {**os.environ, "AUTOINTERP_STORE": str(ingested_path)}
    r = subprocess.run([sys.executable, "-m", "autointerp", "label", "--features", "0-2", "--scorer", "embedding"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "explained" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "autointerp", "labels", "--limit", "zero"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
