import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.store import Store

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def ingested(tmp_path, delphi_cache):
    folder, _ = delphi_cache()
    db = tmp_path / "cli.duckdb"
    r = run("ingest", "delphi", folder.parent, "--store", db, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ingested"][0]["dictionary"] == "layers.3"
    return db


@pytest.mark.parametrize("cmd", [[], ["ingest"], ["ingest", "delphi"], ["ingest", "parquet"], ["capture"],
                                 ["features"], ["sample"], ["dictionaries"], ["label"], ["score"], ["labels"],
                                 ["export"], ["demo"]])
def test_every_command_has_help(cmd):
    r = run(*cmd, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_features_json_matches_store(ingested):
    r = run("features", "--store", ingested, "--json", "--sort", "density", "--limit", "5")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    dens = [f["density"] for f in doc["features"]]
    assert dens == sorted(dens, reverse=True) and len(dens) == 5
    with Store(ingested, read_only=True) as s:
        top = s.activations.feature_stats(1, order_by="density", limit=1)[0]
    assert doc["features"][0]["feature"] == top.feature and doc["summary"]["dead"] == 2


def test_sample_json_shape(ingested):
    r = run("sample", "--store", ingested, "--feature", 1, "--json", "--seed", 5)
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["feature"] == 1 and doc["explain"] and doc["score"]
    for w in doc["explain"] + doc["score"]:
        assert set(w) == {"kind", "context_id", "start", "tokens", "activations"}
        assert len(w["tokens"]) == len(w["activations"])
    assert {w["kind"] for w in doc["explain"]} == {"top", "quantile"}
    assert {w["kind"] for w in doc["score"]} == {"quantile", "random"}
    assert doc["sampler"]["window"] == 32 and doc["seed"] == 5


def test_sample_text_highlights_firing_tokens(ingested):
    r = run("sample", "--store", ingested, "--feature", 0)
    assert r.exit_code == 0 and "<<" in r.stdout and "-- explain" in r.stdout


def test_sample_all_stores_and_reads_back(ingested):
    r = run("sample", "--store", ingested, "--all", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["features"] == 256 and doc["dead"] == 2 and doc["ok"] + doc["too_rare"] == 254
    fresh = json.loads(run("sample", "--store", ingested, "--feature", 9, "--json").stdout)
    stored = json.loads(run("sample", "--store", ingested, "--feature", 9, "--stored", "--json").stdout)
    assert fresh["explain"] == stored["explain"] and fresh["score"] == stored["score"]


@pytest.mark.parametrize("args,code,message", [
    (["sample", "--feature", 99999], 2, "out of range"),
    (["sample"], 2, "either --feature ID or --all"),
    (["features", "--dictionary", "nope"], 3, "no dictionary named 'nope'"),
    (["sample", "--all", "--features", "9-3"], 2, "bad feature list"),
])
def test_errors_are_one_line_and_nonzero(ingested, args, code, message):
    r = run(*args, "--store", ingested)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_ingest_error_exit_code_and_unchanged_store(tmp_path, ingested):
    bad = tmp_path / "empty"
    bad.mkdir()
    with Store(ingested, read_only=True) as s:
        before = s.content_digest()
    r = run("ingest", "delphi", bad, "--store", ingested)
    assert r.exit_code == 4 and "no delphi shards" in r.stderr
    with Store(ingested, read_only=True) as s:
        assert s.content_digest() == before


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


# -- terminal habits -----------------------------------------------------------------------------------

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
