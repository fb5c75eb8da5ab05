"""Input that cannot be held is refused at the edge: one line on stderr, a documented exit code, the store
unchanged and nothing left behind. Labels go to the dictionary their line names; a feature index past the
width (or a stray one) stops an ingest; sampler and scoring numbers stay within what the store and the
sampler hold; a job file that is not text, SIGTERM during `label`, and two exports to one path are each
one line, never a traceback."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.store import Store, open_store

runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _one_line_error(r, code: int, *words: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for w in words:
        assert w in lines[0], (w, lines[0])


def _digest(path) -> str:
    with Store(path, read_only=True) as s:
        return s.content_digest()


# -- 1. labels go to the dictionary their line names -------------------------------------------------

def _line(dictionary, feature, text):
    """A line of our own `export --format jsonl` (export/schema.py label_row), grades left out."""
    return json.dumps({"dictionary": dictionary, "model": "m", "hook": dictionary, "feature_id": feature,
                       "explanation": text, "chosen": True, "explainer": "offline", "prompt_hash": "p",
                       "seed": 0, "created_at": "2025-01-01T00:00:00", "evidence": {}, "scores": {},
                       "feature_scores": {}})


def _texts(path, name):
    with open_store(path, read_only=True) as s:
        return {r["feature_id"]: r["explanation"] for r in s.labels.find(s.dictionary(name).dictionary_id)}


def test_jsonl_labels_go_to_the_dictionary_each_line_names(tmp_path, delphi_cache):
    from autointerp.ingest import ingest_delphi

    small = {"n_seq": 40, "ctx_len": 16, "l0": 2, "n_token_features": 0, "dead": ()}
    a, _ = delphi_cache("a", width=64, n_splits=2, **small)
    b, _ = delphi_cache("b", width=32, n_splits=1, seed=1, **small)
    path = tmp_path / "two.duckdb"
    with Store(path) as s:
        ingest_delphi(s, a)
    f = tmp_path / "labels.jsonl"
    # a store with one dictionary: a line of another is refused, not put into the only one
    f.write_text(_line("a", 3, "a three") + "\n" + _line("b", 5, "b five") + "\n")
    before = _digest(path)
    _one_line_error(cli("ingest", "labels", f, "--store", path, "--format", "jsonl", "--no-index"), 4,
                    f"{f}:2", "dictionary 'b' is not in the store")
    assert _digest(path) == before
    with Store(path) as s:
        ingest_delphi(s, b)
    # every line goes to its own dictionary (feature 40 is past b's 32: it must land in a)
    f.write_text("\n".join([_line("b", 5, "b five"), _line("a", 40, "a forty"), _line("a", 40, "a forty, again"),
                            _line("b", 6, "b six")]) + "\n")
    r = cli("ingest", "labels", f, "--store", path, "--format", "jsonl", "--no-index", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["dictionaries"] == ["b", "a"] and doc["labels"] == 4 and doc["features"] == 3
    assert _texts(path, "a") == {40: "a forty"} and _texts(path, "b") == {5: "b five", 6: "b six"}
    # --dictionary takes the lines that name none; a line naming another is refused, naming it
    before = _digest(path)
    f.write_text(json.dumps({"feature_id": 1, "explanation": "unnamed"}) + "\n" + _line("b", 2, "b two") + "\n")
    _one_line_error(cli("ingest", "labels", f, "--store", path, "--format", "jsonl", "--dictionary", "a",
                        "--no-index"), 4, f"{f}:2", "of dictionary 'b', not --dictionary 'a'")
    f.write_text(_line("c", 1, "c one") + "\n")
    _one_line_error(cli("ingest", "labels", f, "--store", path, "--format", "jsonl", "--no-index"), 4,
                    f"{f}:1", "dictionary 'c' is not in the store (it has 'a', 'b')")
    assert _digest(path) == before


# -- 2. a feature index past the width, or a stray one, stops an ingest --------------------------------

ROW = {"tokens": [" the", " cat", " sat"], "values": [0.0, 1.5, 0.25]}


def _saedashboard(tmp_path, indices):
    """An SAEDashboard output folder: batch-0.json as SAEDashboard's NeuronpediaRunner writes it."""
    folder = tmp_path / "dash"
    folder.mkdir()
    doc = {"model_id": "m", "layer": 3, "sae_set": "res-x", "features": [
        {"feature_index": f, "neg_str": [], "neg_values": [], "pos_str": [], "pos_values": [], "frac_nonzero": 0.01,
         "freq_hist_data_bar_heights": [], "freq_hist_data_bar_values": [], "logits_hist_data_bar_heights": [],
         "logits_hist_data_bar_values": [], "decoder_weights_dist": [],
         "activations": [{"bin_min": -1, "bin_max": 1.5, "bin_contains": -1, **ROW}]} for f in indices]}
    (folder / "batch-0.json").write_text(json.dumps(doc))
    return folder, folder / "batch-0.json"


def _neuronpedia(tmp_path, indices):
    """A Neuronpedia export source folder: activations/batch-0.jsonl.gz of Activation rows."""
    folder = tmp_path / "v1" / "m" / "3-res-x"
    (folder / "activations").mkdir(parents=True)
    path = folder / "activations" / "batch-0.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i, f in enumerate(indices):
            fh.write(json.dumps({"id": f"a{i}", "modelId": "m", "layer": "3-res-x", "index": str(f), "creatorId": "x",
                                 "dataSource": "d", "maxValue": 1.5, "minValue": 0.0, "maxValueTokenIndex": 1,
                                 "dfaValues": [], "dfaMaxValue": None, "dfaTargetIndex": None, "binContains": -1,
                                 "binMin": -1, "binMax": 1.5, **ROW}) + "\n")
    return folder, path


def _parquet(tmp_path, features, meta=None):
    """The Parquet long format: contexts.parquet + activations.parquet (+ dictionary.json)."""
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"context_id": [0], "token_ids": [[5, 6, 7]], "tokens": [[" a", " b", " c"]]}),
                   folder / "contexts.parquet")
    n = len(features)
    pq.write_table(pa.table({"feature": pa.array(features, pa.int64()), "context_id": [0] * n,
                             "position": [i % 3 for i in range(n)], "value": [1.0] * n}),
                   folder / "activations.parquet")
    if meta is not None:
        (folder / "dictionary.json").write_text(json.dumps(meta))
    return folder, folder / "activations.parquet"


def _delphi(tmp_path, delphi_cache):
    """A delphi cache (delphi's exact layout) whose last shard is named as if it held latents 192..19999999."""
    folder, _ = delphi_cache("stray", n_seq=40, ctx_len=16, l0=2, n_token_features=0, dead=())
    shard = folder / "192_255.safetensors"
    stray = shard.rename(folder / "192_19999999.safetensors")
    return folder, stray


CASES = {
    # one stray index among 0..3: a 20M-feature dictionary, silently, before
    "saedashboard-stray": (lambda t, d: _saedashboard(t, [0, 1, 2, 3, 20_000_000]), ["neuronpedia"], (),
                           ["feature 4, activation 0", "feature index 20000000", "far beyond"]),
    # 2^33: a traceback before (the store's feature ids are 32-bit)
    "neuronpedia-2^33": (lambda t, d: _neuronpedia(t, [0, 1, 2**33]), ["neuronpedia"], (),
                         ["batch-0.jsonl.gz: line 3", "feature index 8589934592", "2^26"]),
    "neuronpedia-width": (lambda t, d: _neuronpedia(t, [0, 7, 1]), ["neuronpedia"], ("--width", "4"),
                          ["batch-0.jsonl.gz: line 2", "feature index 7 is outside --width 4"]),
    "delphi-stray-shard": (_delphi, ["delphi"], (), ["192_19999999.safetensors", "feature index 19999999"]),
    "delphi-width": (lambda t, d: (d("w", n_seq=40, ctx_len=16, l0=2, n_token_features=0, dead=())[0],
                                   "192_255.safetensors"), ["delphi"], ("--width", "200"),
                     ["192_255.safetensors", "feature index 255 is outside --width 200"]),
    "parquet-stray": (lambda t, d: _parquet(t, [0, 1, 2, 20_000_000]), ["parquet"], (),
                      ["activations.parquet", "feature index 20000000", "far beyond"]),
    "parquet-metadata-width": (lambda t, d: _parquet(t, [0, 1, 9], {"model": "m", "hook": "h", "width": 8}),
                               ["parquet"], (), ["activations.parquet", "feature index 9 is outside",
                                                 "dictionary.json width 8"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_feature_index_past_the_width_or_a_stray_one_is_one_line_naming_file_and_index(tmp_path, delphi_cache,
                                                                                           case):
    make, command, extra, words = CASES[case]
    source, file = make(tmp_path, delphi_cache)
    new = tmp_path / "new.duckdb"
    args = ["ingest", *command, source, "--store", new, *extra]
    if command != ["delphi"]:
        args += ["--dictionary", "d"]
    _one_line_error(cli(*args), 4, str(file), *words)
    assert not new.exists() and not list(tmp_path.glob("new.duckdb*"))  # nothing left behind


def test_a_far_index_is_taken_when_width_says_so(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # a partial export of a smaller dictionary (features 0-3 and 5000 of a 16k SAE) is no stray
    source, _ = _saedashboard(tmp_path / "a", [0, 1, 2, 3, 5000])
    r = cli("ingest", "neuronpedia", source, "--store", tmp_path / "a.duckdb", "--dictionary", "d", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ingested"][0]["width"] == 5001, r.output
    # one that would make a dictionary of millions is, unless --width says the dictionary is that wide
    source, file = _saedashboard(tmp_path / "b", [0, 1, 2, 3, 3_000_000])
    new = tmp_path / "new.duckdb"
    args = ["ingest", "neuronpedia", source, "--store", new, "--dictionary", "d"]
    _one_line_error(cli(*args), 4, str(file),
                    "feature index 3000000 is far beyond every other (the next highest is 3)")
    r = cli(*args, "--width", "3000001", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ingested"][0]["width"] == 3000001, r.output


@pytest.mark.parametrize("args,code,message", [
    (["ingest", "neuronpedia", "x", "--dictionary", "d", "--width", "0"], 2, "--width must be a whole number"),
    (["ingest", "delphi", "x", "--width", str(2**32)], 2, "from 1 to 4,294,967,295"),
])
def test_a_width_the_store_cannot_hold_is_a_usage_error(tmp_path, args, code, message):
    new = tmp_path / "new.duckdb"
    _one_line_error(cli(*args, "--store", new), code, message)
    assert not new.exists()


# -- 3. sampler and scoring numbers within what the store and the sampler hold --------------------------

@pytest.mark.parametrize("args,code,message", [
    (["label", "--features", "0", "--window", "65536"], 2, "window must be at most 65535"),
    (["sample", "--feature", "0", "--window", "65536"], 2, "window must be at most 65535"),
    (["score", "--feature", "0", "--explanation", "x", "--window", "70000"], 2, "window must be at most 65535"),
    (["label", "--features", "0", "--n-nonfiring", "5000"], 2, "n_score_nonfiring (--n-nonfiring) must be from 0"),
    (["label", "--features", "0", "--n-score", "3000", "--n-nonfiring", "3000"], 2,
     "the score set (n_score + n_nonfiring + n_neighbors = 6000) may hold at most 4096"),
    (["sample", "--feature", "0", "--n-top", "4000", "--n-quantile", "100"], 2, "the explain set"),
    (["label", "--features", "0", "--n-top", "-1"], 2, "n_top must be >= 0"),
    (["label", "--features", "0", "--n-quantiles", "101"], 2, "n_quantiles must be from 1 to 100"),
    (["label", "--features", "0", "--min-windows", str(2**31)], 2, "min_windows must be at most 2147483647"),
    (["label", "--features", "0", "--peak-offset", "32"], 2, "peak_offset must be in [0, 32)"),
    (["label", "--features", "0", "--seed", str(2**63)], 2, "seed must be a 64-bit integer"),
    (["sample", "--feature", "0", "--seed", str(-2**63 - 1)], 2, "seed must be a 64-bit integer"),
    (["label", "--features", "0", "--min-evidence", "5000"], 2, "min_evidence must be at most 4096"),
    (["label", "--features", "0", "--llm-windows", "5000"], 2, "windows must be at most 4096"),
    (["label", "--features", "0", "--adaptive", "0.1", "--adaptive-cap", "5000"], 2, "adaptive cap must be at most"),
    (["label", "--features", "0", "--concurrency", "5000"], 2, "concurrency must be at most 1024"),
    # the same kind of bad value exits 2 whatever the command (README: exit codes)
    (["label", "--features", "0", "--carry-from", "x", "--min-similarity", "2"], 2, "--min-similarity must be between"),
    (["diff", "--runs", "a", "b", "--min-similarity", "2"], 2, "--min-similarity must be between"),
    (["label", "--features", "0", "--carry-from", "x", "--carry-margin", "nan"], 2, "--carry-margin must be from 0"),
    (["label", "--features", "0", "--carry-from", "x", "--carry-min-score", "nan"], 2, "--carry-min-score must be a finite"),
    (["label", "--features", "0", "--candidates", "1000"], 2, "--candidates must be from 1 to 32"),
    (["label", "--features", "99999"], 2, "feature 99999 is out of range"),
    (["sample", "--feature", "99999"], 2, "feature 99999 out of range"),
    (["score", "--feature", "99999", "--explanation", "x"], 2, "feature 99999 is out of range"),
    (["label", "--features", "0", "--explainer", "nonesuch"], 2, "unknown explainer 'nonesuch'"),
    (["label", "--features", "0", "--scorer", "nonesuch"], 2, "unknown scorer nonesuch"),
    (["score", "--feature", "0", "--explanation", "   "], 2, "the explanation is empty"),
])
def test_sampler_and_scoring_values_beyond_their_range_are_one_line(ingested_path, args, code, message):
    before = _digest(ingested_path)
    _one_line_error(cli(*args, "--store", ingested_path), code, message)
    assert _digest(ingested_path) == before


def test_limits_hold_at_the_edge_and_a_stored_config_stays_readable(ingested_path, tmp_path):
    from autointerp.errors import UsageError
    from autointerp.records import SamplerConfig

    wide = {**SamplerConfig().to_dict(), "n_score_nonfiring": 5000}
    assert SamplerConfig(**wide).n_score_nonfiring == 5000  # as the store rebuilds one it recorded earlier
    with pytest.raises(UsageError, match="must be from 0 to 4096"):
        SamplerConfig.from_options(**wide)
    with pytest.raises(UsageError, match="must be a whole number"):
        SamplerConfig.from_options(window=32.5)
    f = tmp_path / "labels.jsonl"  # an imported label's sampler is re-drawn (the browser): checked as options are
    f.write_text(json.dumps({"feature_id": 1, "explanation": "x", "sampler": {"window": 70000}}) + "\n")
    _one_line_error(cli("ingest", "labels", f, "--store", ingested_path, "--format", "jsonl", "--no-index"), 4,
                    f"{f}:1: bad sampler config (window must be at most 65535")


@pytest.mark.parametrize("text,message", [
    ("[sampler]\nwindow = 65536\n", "[sampler] window must be at most 65535"),
    ("[sampler]\nn_nonfiring = 100000000\n", "[sampler] n_score_nonfiring (--n-nonfiring) must be from 0 to 4096"),
    ("[job]\nseed = -9223372036854775809\n", "seed must be a 64-bit integer"),
    ("[job]\nconcurrency = 100000\n", "[job] concurrency must be at most 1024"),
    ("[scoring]\nn_boot = 1000000\n", "[scoring] n_boot must be at most 10000"),
    ("[scoring]\nwindows = 100000\n", "[scoring] windows must be at most 4096"),
])
def test_a_job_file_with_a_value_beyond_its_range_is_exit_20(tmp_path, ingested_path, text, message):
    cfg = tmp_path / "job.toml"
    cfg.write_text(text)
    r = cli("job", "run", "--store", ingested_path, "--config", cfg)
    _one_line_error(r, 20, message)


# -- 4. a job file that is not text ------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "[job]\nprompt = \"caf\xe9\"\n"
                                  .encode("latin-1")])
def test_a_binary_or_non_utf8_job_file_is_exit_20(tmp_path, ingested_path, data):
    cfg = tmp_path / "job.toml"
    cfg.write_bytes(data)
    _one_line_error(cli("job", "run", "--store", ingested_path, "--config", cfg), 20, f"job file {cfg} is not UTF-8")
    with open_store(ingested_path, read_only=True) as s:
        assert s.ledger.job_runs() == []


# -- 5. SIGTERM during `label`: the summary, nothing else ------------------------------------------------

def test_sigterm_during_an_offline_label_prints_the_summary_and_nothing_else(tmp_path, delphi_cache):
    """Offline labelling runs in the event loop's worker task, so SIGTERM (KeyboardInterrupt, as Ctrl-C) lands
    inside a task: asyncio used to print ~130 lines of "Task exception was never retrieved"."""
    from autointerp.ingest import ingest_delphi

    folder, _ = delphi_cache("many", n_seq=200, width=1024)  # enough features to run well past the first commit
    path = tmp_path / "many.duckdb"
    with Store(path) as s:
        ingest_delphi(s, folder)
    env = {**os.environ, "AUTOINTERP_STATUS_SECONDS": "0"}  # a status line at every commit
    child = subprocess.Popen([sys.executable, "-m", "autointerp", "label", "--store", str(path), "--scorer",
                              "embedding"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    committed = threading.Event()

    def read() -> None:
        for line in child.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("label many: "):
                committed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not committed.is_set() and child.poll() is None and time.monotonic() < deadline:
        committed.wait(0.05)
    assert committed.is_set() and child.poll() is None, lines[-20:]
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=120)
    reader.join(timeout=10)
    child.stdout.close()
    assert child.returncode == 23, lines[-40:]
    said = [x for x in lines if x.startswith("interrupted: ")]
    others = [x for x in lines if not x.startswith(("interrupted: ", "label many: "))]
    assert len(said) == 1 and "run again to go on" in said[0] and others == [], lines[-40:]
    assert not any("Task exception" in x or "Traceback" in x for x in lines)
    with open_store(path, read_only=True) as s:
        assert 0 < len(s.labels.find(s.dictionary().dictionary_id)) < 1024  # what finished is committed


# -- 6. two exports to one path at once: one wins, the other is one line -----------------------------------

def _pause(monkeypatch, module, name, started, release):
    """Make `module.name` (a function or class the writer calls early) wait, after saying so, for `release`:
    in the first export's thread only."""
    real = getattr(module, name)

    def waiting(*a, **k):
        if threading.current_thread().name == "first export":
            started.set()
            assert release.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(module, name, waiting)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "html", "neuronpedia"])
def test_two_exports_to_one_path_at_once_one_wins_and_the_other_is_one_line(ingested_path, tmp_path, monkeypatch, fmt):
    from autointerp import export
    from autointerp.export import html, labels, neuronpedia

    copy = tmp_path / "copy.duckdb"  # the first export reads a copy: one process, two stores
    shutil.copy(ingested_path, copy)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / {"jsonl": "labels.jsonl", "parquet": "labels.parquet"}.get(fmt, "site")
    names = {"model_id": "m", "source_id": "s"}
    where = {"jsonl": (labels, "iter_rows"), "parquet": (labels, "iter_rows"), "html": (html, "site_meta"),
             "neuronpedia": (neuronpedia, "_Batches")}[fmt]
    started, release = threading.Event(), threading.Event()
    _pause(monkeypatch, *where, started, release)
    done: dict = {}

    def first() -> None:
        try:
            with open_store(copy, read_only=True) as s:
                if fmt == "neuronpedia":
                    done["res"] = export.write_neuronpedia(s, out, **names)
                elif fmt == "html":
                    done["res"] = export.write_html(s, out, all_features=True)
                else:
                    done["res"] = (export.write_jsonl if fmt == "jsonl" else export.write_parquet)(s, out)
        except BaseException as e:  # noqa: BLE001 - reported below
            done["error"] = e

    t = threading.Thread(target=first, name="first export")
    t.start()
    try:
        assert started.wait(60), done
        extra = ["--model-id", "m", "--source-id", "s"] if fmt == "neuronpedia" else []
        r = cli("export", "--store", ingested_path, "--format", fmt, "--out", out, *extra)
        _one_line_error(r, 8, f"another export is writing {out} now")
    finally:
        release.set()
        t.join(120)
    assert "error" not in done, done
    assert out.exists() and sorted(p.name for p in out_dir.iterdir()) == [out.name]  # the winner, nothing else
    again = cli("export", "--store", ingested_path, "--format", fmt, "--out", out,
                *(["--model-id", "m", "--source-id", "s"] if fmt == "neuronpedia" else []))
    assert again.exit_code == 0, again.output  # the lock went with the first export
    assert sorted(p.name for p in out_dir.iterdir()) == [out.name]


def _sql_one_line_error(r, code: int, message: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output, r.output


# -- 7. errors before SQL ------------------------------------------------------------------------------

@pytest.mark.parametrize("args,code,message", [
    (["labels", "--limit", "-3"], 2, "--limit must be a positive number"),
    (["features", "--limit", "-3"], 2, "--limit must be a positive number"),
    (["job", "list", "--limit", "-1"], 2, "--limit must be a positive number"),
    (["labels", "--sort", "bogus"], 2, "--sort 'bogus' is not one of: feature, embedding"),
    (["features", "--sort", "bogus"], 2, "--sort 'bogus' is not one of: feature, density, max"),
    (["labels", "--status", "maybe"], 2, "--status 'maybe' is not one of"),
    (["label", "--features", "5-2"], 2, "the range 5-2 is reversed (did you mean 2-5?)"),
    (["label", "--features", "0-x"], 2, "bad feature list"),
    (["label", "--features", "999999"], 2, "feature 999999 is out of range"),
    (["label", "--scorer", "bogus"], 2, "unknown scorer bogus"),
    (["label", "--explainer", "nope"], 2, "unknown explainer 'nope'"),
    (["label", "--window", "1"], 2, "window must be at least 2"),
    (["label", "--concurrency", "0"], 2, "concurrency must be at least 1"),
    (["label", "--features", "0-5000000000"], 2, "5000000000 is beyond any dictionary"),
    (["label", "--features", "0-4000000000"], 2, "feature 4000000000 is out of range"),  # no 4e9-long list made
    (["label", "--candidates", "0"], 2, "--candidates must be from 1 to 32"),
    (["label", "--rpm", "-5"], 2, "--rpm must be a positive number, got -5"),
    (["label", "--otpm", "0"], 2, "--otpm must be a positive number, got 0"),
    (["label", "--max-in-flight", "-1"], 2, "--max-in-flight must be from 1 to 1024, got -1"),
    (["label", "--timeout", "-1"], 2, "--timeout must be a positive number"),
    (["label", "--base-url", "notaurl"], 2, "--base-url must be an http:// or https:// URL"),
    (["cost", "--run", "nosuchrun"], 2, "--run 'nosuchrun': no such run in the store"),
    (["export", "--out", "/nonexistent-dir/x.jsonl"], 8, "folder /nonexistent-dir does not exist"),
    (["export", "--format", "parquet", "--out", "/"], 8, "is a folder: this format writes one file"),
    (["export", "--format", "html", "--features", "99999", "--out", "/nonexistent-dir/h"], 8,
     "folder /nonexistent-dir does not exist"),
    (["sample", "--all", "--features", "0-99999"], 2, "feature 99999 is out of range"),
    (["label", "--prices", "/nonexistent.json"], 7, "cannot read prices"),
    (["label", "--bogus-option"], 2, "No such option: --bogus-option"),
    (["sample", "--all", "--features", "9-3"], 2, "reversed"),
    (["show", "--feature", "99999"], 2, "out of range"),
    (["score", "--feature", "99999", "--explanation", "x"], 2, "out of range"),
    (["export", "--format", "xml", "--out", "x"], 2, "--format 'xml' is not one of"),
    (["export", "--dictionary", "nope", "--out", "x.jsonl"], 3, "no dictionary named 'nope'"),
    (["export", "--format", "neuronpedia", "--out", "x"], 8, "needs --model-id and --source-id"),
    (["job", "show", "zzz"], 3, "no single run matches 'zzz'"),
    (["job", "run", "--config", "/dev/null", "--wait", "-1"], 2, "--wait must be 0 or more seconds"),
    (["label", "--batch-poll", "0"], 2, "--batch-poll must be a positive number"),
    (["labels", "--status", "failed", "--sort", "embedding"], 2, "--status failed lists features without a label"),
    (["job", "run", "--config", "/dev/null", "--log", "/nonexistent-dir/job.log"], 20,
     "--log /nonexistent-dir/job.log: folder /nonexistent-dir does not exist"),
])
def test_bad_input_is_one_line_a_documented_code_and_changes_nothing(ingested_path, args, code, message):
    before = _digest(ingested_path)
    r = cli(*args, "--store", ingested_path)
    _sql_one_line_error(r, code, message)
    assert _digest(ingested_path) == before


def test_a_missing_store_is_an_error_not_an_empty_file(tmp_path):
    missing = tmp_path / "typo.duckdb"
    for args in (["label"], ["labels"], ["sample", "--all"], ["features"], ["show", "--feature", "0"]):
        _sql_one_line_error(cli(*args, "--store", missing), 3, f"no store at {missing}")
    cfg = tmp_path / "job.toml"
    cfg.write_text("[job]\nscorers = []\n")
    _sql_one_line_error(cli("job", "run", "--store", missing, "--config", cfg), 20, "no store at")
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
    _sql_one_line_error(r, 2, "--max-tokens must be at least 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "empty"]
