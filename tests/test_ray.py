"""`job run --executor ray` on a Ray cluster started here on loopback (`ray start --head`)."""

import json
import time
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ray_env
from loopback import Loopback, explainer
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.store import open_store

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs, token-authenticated (Ray's own RAY_AUTH_MODE / RAY_AUTH_TOKEN,
    which the driver in this process then uses too)."""
    with ray_env() as port:
        started = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                                  "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                                 capture_output=True, text=True)
        assert started.returncode == 0, started.stderr[-2000:]
        try:
            yield f"127.0.0.1:{port}"
        finally:
            subprocess.run([RAY, "stop", "--force"], capture_output=True)


def _run(store, cfg_text, tmp_path, *extra):
    cfg = tmp_path / "job.toml"
    cfg.write_text(cfg_text)
    r = CliRunner().invoke(app, ["job", "run", "--store", str(store), "--config", str(cfg), "--json", *extra])
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip() else None), r.output


def _wait_until_no_process_writes(folder: Path, timeout: float = 120.0) -> None:
    """Until no process holds a file under `folder` open (a dead driver's workers have stopped)."""
    import threading

    root, deadline = str(folder.resolve()), time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                busy = any(os.path.realpath(f"/proc/{pid}/fd/{fd}").startswith(root)
                           for fd in os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue
            if busy:
                break
        if not busy:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"files under {folder} still open after {timeout} s")


def test_ray_labels_like_a_local_run(cluster, ingested_path, tmp_path):
    local = tmp_path / "local.duckdb"
    shutil.copyfile(ingested_path, local)
    job = '[job]\nfeatures = "0-39"\nscorers = ["simulation"]\n'
    code, res, out = _run(ingested_path, job, tmp_path, "--executor", "ray", "--address", cluster)
    assert code == 0, out
    s = res["summary"]
    assert s["executor"] == "ray" and s["explained"] + s["skipped"] == 40 and len(s["extra"]["shards"]) == 4
    assert len({x["pid"] for x in s["extra"]["shards"]}) >= 2  # more than one worker process
    assert _run(local, job, tmp_path)[0] == 0
    with open_store(ingested_path, read_only=True) as a, open_store(local, read_only=True) as b:
        # the same labels and grades as a run in one process (to bfloat16 noise: a shard embeds its labels
        # in batches of other labels, padded to other lengths)
        ray_rows = {r["feature_id"]: (r["explanation"], r["scores"]["simulation"]["value"]) for r in a.labels.find()}
        local_rows = {r["feature_id"]: (r["explanation"], r["scores"]["simulation"]["value"]) for r in b.labels.find()}
        assert {f: t for f, (t, _) in ray_rows.items()} == {f: t for f, (t, _) in local_rows.items()}
        assert all(abs(ray_rows[f][1] - local_rows[f][1]) < 2e-3 for f in ray_rows)
        assert a.ledger.job_runs()[0]["executor"] == "ray" and a.ledger.job_runs()[0]["status"] == "done"
    assert not list(Path(f"{ingested_path}.ray").rglob("*.*"))  # snapshot and shards merged and removed
    code, again, _ = _run(ingested_path, job, tmp_path, "--executor", "ray", "--address", cluster)
    assert code == 0 and again["summary"]["already_done"] == 40 and again["summary"]["explained"] == 0


def test_ray_workers_share_one_rate_limit_and_one_budget(cluster, ingested_path, tmp_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=explainer, rpm=600) as server:  # the server refuses what goes over 600 a minute
        job = (f'[job]\nexplainer = "anthropic:claude-haiku-4-5"\nscorers = []\nfeatures = "0-199"\nconcurrency = 4\n'
               f'[limits]\nbase_url = "{server.url}"\napi_key_env = "K"\nrpm = 600\n[budget]\nfeatures = 30\n')
        code, res, out = _run(ingested_path, job, tmp_path, "--executor", "ray", "--address", cluster)
        sent = server.count("/v1/messages")
        over = server.stats["over_limit"]
    assert code == 21, out  # stopped by the budget
    s = res["summary"]
    assert s["explained"] + s["skipped"] + s["failed"] == 30 and s["stopped"].startswith("budget: features")
    assert len({x["pid"] for x in s["extra"]["shards"]}) >= 2
    # two workers, one limiter: together they stay under the server's limit (a 1-second burst aside)
    assert over <= 2 and sent - over == s["explained"]
    with open_store(ingested_path, read_only=True) as st:
        paid = st.query("SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached AND status = 'ok'",
                              [res["run_id"]]).fetchone()[0]
        assert paid == s["explained"] and st.ledger.job_runs()[0]["status"] == "budget"  # every worker's ledger rows merged


def test_kill_9_the_ray_driver_then_rerun(cluster, ingested_path, tmp_path):
    """The driver killed mid-run: the workers' journals stay in STORE.ray; the next run (local, here)
    merges them first, so no reply that had arrived is bought again, and it finishes the job."""
    from collections import Counter

    with Loopback(reply=explainer, latency=0.05) as server:
        cfg = tmp_path / "job.toml"
        cfg.write_text(f'[job]\nexplainer = "anthropic:claude-haiku-4-5"\nscorers = []\nfeatures = "0-59"\n'
                       f'concurrency = 2\n[limits]\nbase_url = "{server.url}"\napi_key_env = "K"\nrpm = 60000\n')
        env = {**os.environ, "K": "sk-x"}
        cmd = [sys.executable, "-m", "autointerp", "job", "run", "--store", str(ingested_path), "--config", str(cfg),
               "--json"]
        child = subprocess.Popen(cmd + ["--executor", "ray", "--address", cluster], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while server.count("/v1/messages") < 20 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        child.kill()
        child.wait()
        _wait_until_no_process_writes(Path(f"{ingested_path}.ray"))  # the workers notice their owner is gone
        left = list(Path(f"{ingested_path}.ray").rglob("journal-*.jsonl"))
        assert left, "the workers' journals survive the driver"
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        merged = json.loads(done.stdout)
        bodies = Counter(json.dumps(r["body"], sort_keys=True) for r in server.requests  # cut off by a kill:
                         if r["path"].endswith("/v1/messages") and r["body"].get("messages"))  # no body
    assert merged["summary"]["explained"] + merged["summary"]["skipped"] + merged["summary"]["already_done"] == 60
    with open_store(ingested_path, read_only=True) as st:
        paid = st.query("SELECT count(*), count(DISTINCT cache_key) FROM llm_calls WHERE NOT cached "
                              "AND status = 'ok'").fetchone()
        assert st.ledger.job_runs()[1]["status"] == "crashed"
    assert paid[0] == paid[1] == len(bodies)  # one paid reply per prompt
    assert sum(n - 1 for n in bodies.values()) <= 2 * 2  # resent: at most what was in flight (2 workers x 2)
