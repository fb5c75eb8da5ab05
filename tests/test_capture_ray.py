"""`capture --executor ray` on a Ray cluster started here on loopback with 2 CPU workers, against the real
all-MiniLM-L6-v2: it stores exactly what a local capture stores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ray_env
from test_capture_scan import CTX, DOCS, NEURONS, contexts, same_dictionary, write_sae
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.store import Store

RAY = str(Path(sys.executable).parent / "ray")
runner = CliRunner()


def _ended_with_this_process() -> None:
    """In the child: SIGTERM when the test process ends, even killed (Linux PR_SET_PDEATHSIG), so a test run
    that dies never leaves its Ray head behind."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs, token-authenticated as in test_ray.py, in a temp dir of its own;
    `ray start --block` in a session of its own, so the teardown stops exactly the processes it started (not
    `ray stop`, which stops every Ray on the machine)."""
    with ray_env() as port:
        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
        head = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                                 f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                                 "--disable-usage-stats", f"--temp-dir={temp}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                preexec_fn=_ended_with_this_process, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seen = []
        for line in head.stdout:
            seen.append(line)
            if "Ray runtime started" in line:
                break
        assert head.poll() is None, "".join(seen)[-2000:]
        try:
            yield f"127.0.0.1:{port}"
        finally:
            head.send_signal(signal.SIGTERM)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """~120 contexts of 16 tokens of real prose."""
    p = tmp_path_factory.mktemp("docs") / "docs.txt"
    p.write_text("\n".join(DOCS.read_text().splitlines()[:60]) + "\n")
    return p


def args(store: Path, corpus: Path, model: Path, sae: Path, *extra: str) -> list[str]:
    return ["capture", "--model", str(model), "--corpus", str(corpus), "--store", str(store), "--sae", str(sae),
            "--neurons", NEURONS, "--ctx-len", str(CTX), "--batch-tokens", str(8 * CTX), "--device", "cpu", "--json",
            *extra]


def test_a_ray_capture_stores_what_a_local_capture_does(ray_head, tmp_path, docs, minilm):
    sae = write_sae(tmp_path / "resid-sae")
    local, ray = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    r = runner.invoke(app, args(local, docs, minilm, sae))
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, args(ray, docs, minilm, sae, "--executor", "ray", "--workers", "2",
                                "--ray-address", ray_head))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "done" and out["contexts"] > 100 and len(out["dictionaries"]) == 2
    assert not Path(f"{ray}.capture-work").exists()  # the packed corpus and the shards are gone
    with Store(local, read_only=True) as a, Store(ray, read_only=True) as b:
        assert contexts(a) == contexts(b)
        names = [d.name for d in a.dictionaries()]
        assert names == [d.name for d in b.dictionaries()] and len(names) == 2
        for name in names:
            same_dictionary(a, b, name)  # every (feature, context, position, value) and every feature_stats row
            cfg = b.dictionary(name).config
            assert (cfg["executor"], cfg["workers"]) == ("ray", 2)
        assert [s.status for s in b.captures.all()] == ["done"]
        assert not b.query("SELECT count(*) FROM information_schema.tables "
                                 "WHERE table_name LIKE 'capture\\_%' ESCAPE '\\'").fetchone()[0]
    again = runner.invoke(app, args(ray, docs, minilm, sae, "--executor", "ray", "--ray-address", ray_head))
    assert again.exit_code == 0 and json.loads(again.stdout)["status"] == "complete", again.output


def test_bad_input_to_a_ray_capture_is_one_line_and_leaves_nothing(tmp_path, docs, minilm):
    store = tmp_path / "s.duckdb"
    sae = write_sae(tmp_path / "resid-sae")
    r = runner.invoke(app, args(store, docs, minilm, sae, "--executor", "ray", "--neurons", "encoder.layer.99.nope",
                                "--ray-address", "127.0.0.1:1"))
    assert r.exit_code == 5 and r.stderr.count("\n") == 1 and "encoder.layer.99.nope" in r.stderr, r.output
    for extra, message in ((["--executor", "dask"], "unknown executor 'dask': local or ray"),
                           (["--executor", "ray", "--workers", "0"], "--workers must be 1 or more, got 0"),
                           (["--workers", "2"], "--workers and --ray-address go with --executor ray")):
        r = runner.invoke(app, args(store, docs, minilm, sae, *extra))
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resid-sae"]  # no store, no work folder


def test_a_worker_that_dies_leaves_nothing(ray_head, tmp_path, minilm):
    """A worker killed mid-capture (kill -9, as the kernel's OOM killer would) is one line, exit 5; the store the
    command made and the work folder are removed."""
    import time

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(DOCS.read_text().splitlines()[:400]) + "\n")  # long enough to be caught running
    sae = write_sae(tmp_path / "resid-sae")
    store = tmp_path / "s.duckdb"
    p = subprocess.Popen([sys.executable, "-c", "from autointerp.cli import main; main()",
                          *args(store, corpus, minilm, sae, "--executor", "ray", "--workers", "2", "--ray-address",
                                ray_head)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = False, time.monotonic() + 120
    while not killed and p.poll() is None and time.monotonic() < deadline:
        pids = subprocess.run(["pgrep", "-f", "ray::capture_part"], capture_output=True, text=True).stdout.split()
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    out, err = p.communicate(timeout=300)
    assert killed, f"no worker was seen running: {out} {err}"
    assert p.returncode == 5 and err.startswith("error: a Ray worker failed: ") and "died" in err, err
    assert err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.txt", "resid-sae"]