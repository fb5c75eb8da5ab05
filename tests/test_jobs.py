"""`autointerp job`: incremental runs under a lock, budgets, the ledger, logs, exit codes, and kill -9."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from loopback import Loopback, explainer
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.job import EXIT
from autointerp.job.config import JobConfigError, parse_config
from autointerp.job.run import job_lock
from autointerp.store import open_store


def _job(tmp_path, text: str, name: str = "job.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _run(store, cfg, *extra):
    r = CliRunner().invoke(app, ["job", "run", "--store", str(store), "--config", str(cfg), "--json", *extra])
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip() else None), r.output


def test_job_files_are_checked_before_anything_runs(tmp_path, ingested_path):
    for text, message in [('[job]\nexplainr = "offline"', "no key 'explainr'"),
                          ("[jobs]\n", "unknown section"),
                          ("[job]\nconcurrency = \"8\"", "concurrency must be int"),
                          ("[budget]\ndollars = -1", "dollars must be >= 0"),
                          ("[sampler]\nwindow = 1", "window must be at least 2"),
                          ("[job\n", "not valid TOML"),
                          ("[job]\nbatch = true\n[budget]\ndollars = 5", "cannot hold with batch")]:
        with pytest.raises(JobConfigError, match=message):
            parse_config(text)
        code, _, out = _run(ingested_path, _job(tmp_path, text))
        assert code == EXIT["could_not_start"] and message.split()[0] in out
    code, _, out = _run(ingested_path, _job(tmp_path, '[job]\ndictionary = "nope"'))
    assert code == EXIT["could_not_start"] and "nope" in out
    with open_store(ingested_path, read_only=True) as s:
        assert s.ledger.job_runs() == []  # nothing started, nothing in the ledger


def test_a_job_is_incremental_budgeted_logged_and_in_the_ledger(tmp_path, ingested_path):
    cfg = _job(tmp_path, '[job]\nfeatures = "0-29"\nscorers = ["simulation"]\n[budget]\nfeatures = 12\n')
    code, first, _ = _run(ingested_path, cfg)
    assert code == EXIT["budget"] and first["status"] == "budget"
    assert first["summary"]["explained"] + first["summary"]["skipped"] == 12  # offline runs one feature at a time
    assert first["summary"]["stopped"].startswith("budget: features")
    cfg2 = _job(tmp_path, '[job]\nfeatures = "0-29"\nscorers = ["simulation"]\n', "nightly.toml")
    code, second, _ = _run(ingested_path, cfg2)
    assert code == EXIT["done"] and second["summary"]["already_done"] == 12
    assert second["summary"]["explained"] + second["summary"]["skipped"] == 18
    code, third, _ = _run(ingested_path, cfg2)  # nothing new: nothing to do
    assert code == 0 and third["summary"]["already_done"] == 30 and third["summary"]["explained"] == 0
    r = CliRunner().invoke(app, ["job", "list", "--store", str(ingested_path), "--json"])
    runs = json.loads(r.stdout)["runs"]
    assert [x["status"] for x in runs] == ["done", "done", "budget"]  # newest first
    assert runs[2]["features_done"] + runs[2]["features_skipped"] == 12 and runs[2]["exit_code"] == 21
    shown = json.loads(CliRunner().invoke(app, ["job", "show", "--store", str(ingested_path), first["run_id"][:8],
                                                "--json"]).stdout)
    assert shown["config"] == cfg.read_text() and shown["summary"]["stopped"].startswith("budget")
    log = [json.loads(x) for x in Path(f"{ingested_path}.jobs.log").read_text().splitlines()]
    assert [e["event"] for e in log if e["run_id"] == first["run_id"]][0] == "start"
    end = [e for e in log if e["run_id"] == first["run_id"] and e["event"] == "end"][0]
    assert end["exit_code"] == 21 and end["status"] == "budget"


def test_a_second_job_on_the_store_is_refused_or_waits(tmp_path, ingested_path):
    cfg = _job(tmp_path, '[job]\nfeatures = "0-3"\nscorers = []\n')
    with job_lock(Path(ingested_path), "other-run"):
        code, _, out = _run(ingested_path, cfg)
        assert code == EXIT["could_not_start"] and "job other-run" in out and "--wait" in out
        code, _, out = _run(ingested_path, cfg, "--wait", "0.5")
        assert code == EXIT["could_not_start"] and "waited 0.5 s" in out

    lock = Path(f"{ingested_path}.job.lock").resolve()
    held = threading.Event()

    def opened_by_this_process() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += os.path.realpath(f"/proc/self/fd/{fd}") == str(lock)
            except OSError:
                continue
        return n

    def hold():  # until the queued job has opened the lock file too: it is waiting, not racing
        with job_lock(Path(ingested_path), "brief-run"):
            held.set()
            deadline = time.monotonic() + 60
            while opened_by_this_process() < 2 and time.monotonic() < deadline:
                threading.Event().wait(0.01)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(60)
    code, res, _ = _run(ingested_path, cfg, "--wait", "30")  # queued behind it, then runs
    t.join()
    assert code == 0 and res["summary"]["explained"] == 4


def test_dollar_budget_stops_an_llm_job(tmp_path, ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=explainer) as server:
        cfg = _job(tmp_path, f'[job]\nexplainer = "anthropic:claude-haiku-4-5"\nscorers = []\nconcurrency = 2\n'
                             f'[limits]\nbase_url = "{server.url}"\napi_key_env = "K"\nrpm = 60000\n'
                             f'[budget]\ndollars = 0.01\n')
        code, res, out = _run(ingested_path, cfg)
    assert code == EXIT["budget"], out
    s = res["summary"]
    per_call = s["cost"][0]["cost_usd"] / s["cost"][0]["calls"]
    assert 0.01 <= s["cost"][0]["cost_usd"] <= 0.01 + 2 * per_call  # stops at the limit, in-flight calls finish
    assert 0 < s["explained"] < 240
    with open_store(ingested_path, read_only=True) as st:
        assert st.ledger.job_runs()[0]["dollars"] == pytest.approx(s["cost"][0]["cost_usd"])


def test_kill_9_a_job_three_times_then_finish(tmp_path, ingested_path):
    """kill -9 the job mid-run three times, then let it finish: every feature labelled once, one paid
    reply per prompt, and no prompt sent again but the few in flight at a kill."""
    with Loopback(reply=explainer, latency=0.05) as server:
        cfg = _job(tmp_path, f'[job]\nexplainer = "anthropic:claude-haiku-4-5"\nscorers = []\nconcurrency = 4\n'
                             f'features = "0-79"\n[limits]\nbase_url = "{server.url}"\napi_key_env = "K"\n'
                             f'rpm = 60000\n')
        env = {**os.environ, "K": "sk-x"}
        cmd = [sys.executable, "-m", "autointerp", "job", "run", "--store", str(ingested_path), "--config", str(cfg),
               "--json"]
        kills = 0
        for target in (15, 35, 55):
            child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 120
            while server.count("/v1/messages") < target and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            kills += 1
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        # a request cut off by the kill arrives without its body: it was never a prompt the model saw
        bodies = Counter(json.dumps(r["body"], sort_keys=True) for r in server.requests
                         if r["path"].endswith("/v1/messages") and r["body"].get("messages"))
    with open_store(ingested_path, read_only=True) as s:
        rows = s.labels.find()
        calls = s.query("SELECT count(*), count(DISTINCT call_id), count(DISTINCT cache_key) FROM llm_calls "
                              "WHERE NOT cached AND status = 'ok'").fetchone()
        runs = s.ledger.job_runs()
        labelled = s.labels.label_summary(s.dictionary().dictionary_id)
    assert sum(labelled.values()) == 80 and labelled.get("failed", 0) == 0
    assert len(rows) == len({r["feature_id"] for r in rows})  # no feature twice
    assert calls[0] == calls[1] == calls[2] == len(bodies)  # one paid reply per prompt in the ledger
    assert sum(n - 1 for n in bodies.values()) <= kills * 4  # resent: at most the calls in flight at each kill
    assert [r["status"] for r in runs] == ["done", "crashed", "crashed", "crashed"]


def test_sigterm_stops_a_job_cleanly_and_a_time_budget_of_zero_starts_nothing(tmp_path, ingested_path):
    cfg = _job(tmp_path, '[job]\nscorers = []\n[budget]\nminutes = 0\n')
    code, res, _ = _run(ingested_path, cfg)
    assert code == EXIT["budget"] and res["summary"]["explained"] == 0 and "seconds" in res["summary"]["stopped"]
    with Loopback(reply=explainer, latency=0.2) as server:
        cfg = _job(tmp_path, f'[job]\nexplainer = "anthropic:claude-haiku-4-5"\nscorers = []\nconcurrency = 2\n'
                             f'[limits]\nbase_url = "{server.url}"\napi_key_env = "K"\nrpm = 60000\n', "llm.toml")
        child = subprocess.Popen([sys.executable, "-m", "autointerp", "job", "run", "--store", str(ingested_path),
                                  "--config", str(cfg), "--json"], env={**os.environ, "K": "sk-x"},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while server.count("/v1/messages") < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    assert child.returncode == EXIT["interrupted"], err[-2000:]
    res = json.loads(out)
    with open_store(ingested_path, read_only=True) as s:
        run = s.ledger.job_runs()[0]
        assert run["status"] == "interrupted" and run["features_done"] == res["summary"]["explained"] > 0
        assert len(s.labels.find()) >= res["summary"]["explained"]  # what finished before the signal is committed


runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


# -- grades follow the scorers -------------------------------------------------------------------------

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
