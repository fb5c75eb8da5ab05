"""A service that stays up: `serve` and the read commands work while jobs and imports write the same store, as an
operator runs them (real processes, a real server, kill -9), and the store lock files and errors that make it so."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from loopback import Loopback, explainer
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.store import open_store

AUTOINTERP = [sys.executable, "-m", "autointerp"]


def _job_file(tmp_path: Path, url: str) -> Path:
    p = tmp_path / "nightly.toml"
    p.write_text(f'[job]\nexplainer = "anthropic:claude-haiku-4-5"\nscorers = []\nconcurrency = 2\n'
                 f'features = "0-119"\n[limits]\nbase_url = "{url}"\napi_key_env = "K"\nrpm = 60000\n')
    return p


class _Reader:
    """Reads the API of a running `serve` over and over on a thread: every answer's status and the labelled
    count it showed."""

    def __init__(self, url: str) -> None:
        self.url, self.seen, self.statuses = url, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as r:
                self.statuses.append(r.status)
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            self.statuses.append(e.code)
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            doc = self._get("api/dictionaries")
            if doc is not None:
                self.seen.append(doc[0]["labelled"])
            self._get("api/features?limit=5&sort=feature")
            time.sleep(0.05)

    def labelled(self) -> int:
        return self.seen[-1] if self.seen else -1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def _serve(store: Path):
    proc = subprocess.Popen([*AUTOINTERP, "serve", "--store", str(store), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving"), line + proc.stderr.read()
    return proc, line.split(" at ")[1].split(" ")[0]


def _labels(store: Path) -> dict[int, str]:
    with open_store(store, read_only=True) as s:
        rows = s.labels.find()
    assert len(rows) == len({r["feature_id"] for r in rows})  # no feature twice
    return {r["feature_id"]: r["explanation"] for r in rows}


@pytest.fixture
def two_stores(tmp_path, ingested_path):
    """The same ingested store twice: one served while a job writes it, one labelled alone."""
    alone = tmp_path / "alone.duckdb"
    shutil.copyfile(ingested_path, alone)
    return Path(ingested_path), alone


def test_serve_stays_up_while_a_job_labels_the_store_and_is_killed(tmp_path, two_stores):
    """serve is up; a nightly job labels the store, committing as it goes, is killed with -9 once the server
    shows some of its labels, and is run again to the end. Every request answers 200, the labelled count
    only grows and reaches the job's, the killed run's ledger row counts what it committed, and the labels
    equal those of the same job on a copy with no server beside it."""
    served, alone = two_stores
    with Loopback(reply=explainer, latency=0.05) as llm:
        cfg = _job_file(tmp_path, llm.url)
        env = {**os.environ, "K": "sk-x"}
        job = [*AUTOINTERP, "job", "run", "--config", str(cfg), "--json"]
        assert subprocess.run([*job, "--store", str(alone)], env=env, capture_output=True).returncode == 0
        server, url = _serve(served)
        reader = _Reader(url)
        try:
            child = subprocess.Popen([*job, "--store", str(served)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120  # once the server shows some of its labels, the job dies mid-run
            while reader.labelled() <= 0 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.02)
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            assert 0 < reader.labelled() < 120
            child = subprocess.Popen([*job, "--store", str(served)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0, err[-2000:]
            final = len(_labels(served))  # read beside the running server
            deadline = time.monotonic() + 60
            while reader.labelled() < final and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            reader.stop()
            server.terminate()
            server.wait(30)
    assert reader.statuses and set(reader.statuses) == {200}, set(reader.statuses)
    assert reader.seen == sorted(reader.seen), "the labelled count went down"
    assert reader.seen[0] == 0 and reader.labelled() == final == 120
    assert _labels(served) == _labels(alone)
    with open_store(served, read_only=True) as s:
        runs = s.ledger.job_runs()
    assert [r["status"] for r in runs] == ["done", "crashed"]
    assert runs[1]["features_done"] > 0 and runs[0]["features_done"] + runs[1]["features_done"] >= 120


def test_read_commands_work_while_a_writer_holds_the_store(ingested_path):
    """`labels`, `show`, `features` and `export` beside an open writer (a label run in this process): they
    read what it committed; a second writer is refused with who holds the store, or waits with --wait."""
    from autointerp.pipeline import LabelRun, label

    s = open_store(ingested_path)
    try:
        d = s.dictionary()
        label(s, d, LabelRun(features=[0, 1, 2], scorers=()))
        r = CliRunner().invoke(app, ["labels", "--store", str(ingested_path), "--json"])
        assert r.exit_code == 0, r.output
        assert {row["feature_id"] for row in json.loads(r.stdout)["labels"]} == {0, 1, 2}
        for cmd in (["show", "--store", str(ingested_path), "--feature", "1", "--json"],
                    ["features", "--store", str(ingested_path), "--limit", "3", "--json"]):
            assert CliRunner().invoke(app, cmd).exit_code == 0
        other = subprocess.run([*AUTOINTERP, "label", "--store", str(ingested_path), "--features", "5"],
                               capture_output=True, text=True)
        assert other.returncode == 3 and len(other.stderr.strip().splitlines()) == 1, other.stderr
        assert f"being written by pid {os.getpid()}" in other.stderr and "one writer at a time" in other.stderr
    finally:
        s.close()


def test_a_refused_job_is_in_the_job_list(tmp_path, ingested_path):
    """A job refused because another writer holds the store (no --wait): exit 20, and `job list` shows it
    with its reason once the store is free; with --wait it waits for the writer, then runs."""
    cfg = tmp_path / "j.toml"
    cfg.write_text('[job]\nfeatures = "0-3"\nscorers = []\n')
    s = open_store(ingested_path)
    try:
        r = subprocess.run([*AUTOINTERP, "job", "run", "--store", str(ingested_path), "--config", str(cfg), "--json"],
                           capture_output=True, text=True)
        assert r.returncode == 20 and "one writer at a time" in r.stderr, r.stderr
        threading.Timer(2.0, s.close).start()
        r = subprocess.run([*AUTOINTERP, "job", "run", "--store", str(ingested_path), "--config", str(cfg), "--json",
                            "--wait", "60"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        s.close()
    r = CliRunner().invoke(app, ["job", "list", "--store", str(ingested_path), "--json"])
    runs = json.loads(r.stdout)["runs"]
    assert [x["status"] for x in runs] == ["done", "could_not_start"]
    assert "one writer at a time" in runs[1]["stop_reason"] and runs[1]["exit_code"] == 20


def test_a_damaged_store_says_so_never_in_use(tmp_path, ingested_path):
    """Blocks of the file overwritten: every command says the store is damaged (exit 3, one line), never that
    another process holds it."""
    damaged = tmp_path / "damaged.duckdb"
    shutil.copyfile(ingested_path, damaged)
    size = damaged.stat().st_size
    with damaged.open("r+b") as fh:
        for off in range(300_000, size, 262_144):
            fh.seek(off)
            fh.write(os.urandom(4096))
    for cmd in (["features", "--limit", "3"], ["labels"], ["label", "--features", "0-3"],
                ["export", "--out", str(tmp_path / "x.jsonl")]):
        r = subprocess.run([*AUTOINTERP, *cmd, "--store", str(damaged)], capture_output=True, text=True)
        assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1, (cmd, r.stderr)
        assert "damaged" in r.stderr and "in use" not in r.stderr, r.stderr
    assert not (tmp_path / "x.jsonl").exists()


FULL_DISK = r"""
set -u
mount -t tmpfs -o size={size}k tmpfs {disk}
cp {store} {disk}/s.duckdb
py={py}
run() {{ "$py" -m autointerp "$@" --store {disk}/s.duckdb --json > /dev/null 2>> {out}/$1.err; echo $? > {out}/$1.code; }}
"$py" -m autointerp label --features 0-31 --scorer "" --store {disk}/s.duckdb --json > /dev/null || exit 1
"$py" -c "from autointerp.store import Store; print(Store('{disk}/s.duckdb', read_only=True).content_digest())" > {out}/before
run ingest labels {labels} --format jsonl --no-index
"$py" -c "from autointerp.store import Store; print(Store('{disk}/s.duckdb', read_only=True).content_digest())" > {out}/after
run label --features 0-255 --force
dd if=/dev/zero of={disk}/filler bs=4k 2> /dev/null  # what the label run left free, taken
run export --out {disk}/labels.jsonl
ls -a {disk} > {out}/files
"""


def test_a_full_disk_is_one_line_naming_the_path_and_the_space_left(tmp_path, ingested_path):
    """The store on a small file system (tmpfs, in a mount namespace of the test's own): an import, a label
    run and an export that run out of space each say so in one line (exit 10) naming the path and the space
    free; the import leaves the store as it was, and no partial file is left."""
    labels = tmp_path / "labels.jsonl"
    with labels.open("w") as fh:  # far more than the disk holds
        for f in range(256):
            for k in range(40):
                fh.write(json.dumps({"feature_id": f, "explanation": f"label {k} of {f} " + "x" * 2000,
                                     "chosen": k == 0, "explainer": "elsewhere", "prompt_hash": f"h{k}",
                                     "seed": 0}) + "\n")
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    size = Path(ingested_path).stat().st_size // 1024 + 2500
    script = FULL_DISK.format(size=size, disk=disk, store=ingested_path, py=sys.executable, out=out, labels=labels)
    r = subprocess.run(["unshare", "--mount", "--map-root-user", "bash", "-c", script], capture_output=True,
                       text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0 and (out / "before").exists(), r.stderr
    assert (out / "before").read_text() == (out / "after").read_text()  # the import left the store as it was
    for name in ("ingest", "label", "export"):
        code, err = int((out / f"{name}.code").read_text()), (out / f"{name}.err").read_text()
        assert code == 10 and len(err.strip().splitlines()) == 1, (name, code, err)
        assert "no space left on the device of" in err and "free" in err and str(disk) in err, err
    left = set((out / "files").read_text().split())
    assert not any(n.endswith((".tmp", ".autointerp-lock")) or n.startswith("labels.jsonl") for n in left), left


def test_a_long_transaction_keeps_readers_out_with_a_clear_answer(ingested_path):
    """A writer inside one long transaction (an ingest, a capture's final sort): a read command waits, then
    says who writes (exit 3); the server answers 503 with Retry-After, and answers again once it ends."""
    from autointerp.errors import StoreBusy
    from autointerp.store import Store

    writer = Store(ingested_path)
    server, url = _serve(ingested_path)
    try:
        with urllib.request.urlopen(url + "api/dictionaries", timeout=30) as r:
            assert r.status == 200
        with writer.transaction():
            with pytest.raises(StoreBusy, match="one long transaction") as err:
                Store(ingested_path, read_only=True, read_wait=0.5)
            assert err.value.exit_code == 3
            with urllib.request.urlopen(url + "api/features?limit=3", timeout=30) as r:
                assert r.status == 200  # the index pages come from the server's memory
            with pytest.raises(urllib.error.HTTPError) as http:  # a feature page reads the store
                urllib.request.urlopen(url + "api/features/0", timeout=60)
            assert http.value.code == 503 and http.value.headers["retry-after"] == "10"
            assert "being written by" in json.loads(http.value.read())["error"]
        with urllib.request.urlopen(url + "api/features/0", timeout=30) as r:
            assert r.status == 200
    finally:
        server.terminate()
        server.wait(30)
        writer.close()
