"""Importing labels made elsewhere, in three formats (jsonl, Neuronpedia, delphi): round trips, grading what
was imported, bad input."""

import gzip
import json

import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.search import LABELS
from autointerp.store import open_store

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _labels(path):
    with open_store(path, read_only=True) as s:
        return {r["feature_id"]: r for r in s.labels.find(s.dictionary().dictionary_id)}


def _delphi_results(folder, texts: dict[int, str], hook="layers.3"):
    """delphi's results layout: explanations/<hook>_latent<N>.txt (a JSON string) and scores/detection/..."""
    (folder / "explanations").mkdir(parents=True)
    (folder / "scores" / "detection").mkdir(parents=True)
    for f, t in texts.items():
        (folder / "explanations" / f"{hook}_latent{f}.txt").write_text(json.dumps(t))
        examples = [{"str_tokens": ["a"], "activations": [1.0], "distance": 1, "activating": True, "prediction": True,
                     "probability": 0.9, "correct": True}] * 3 + [
            {"str_tokens": ["b"], "activations": [0.0], "distance": -1, "activating": False, "prediction": f % 2 == 0,
             "probability": 0.4, "correct": f % 2 == 1}] * 2
        (folder / "scores" / "detection" / f"{hook}_latent{f}.txt").write_text(json.dumps(examples))


def test_label_import_round_trips_each_format_and_gets_graded(labelled_24, twin, tmp_path):
    ours = _labels(labelled_24)
    assert len(ours) == 24
    out = tmp_path / "labels.jsonl"
    assert cli("export", "--store", labelled_24, "--out", out).exit_code == 0
    assert cli("export", "--store", labelled_24, "--out", tmp_path / "np", "--format", "neuronpedia", "--model-id", "m",
               "--source-id", "s").exit_code == 0
    _delphi_results(tmp_path / "delphi", {f: r["explanation"] for f, r in ours.items()})
    for fmt, path, explainer in [("jsonl", out, "jsonl:offline"), ("neuronpedia", tmp_path / "np" / "v1" / "m" / "s",
                                                                   "neuronpedia:autointerp-offline"),
                                 ("delphi", tmp_path / "delphi", "delphi")]:
        r = cli("ingest", "labels", path, "--store", twin, "--format", fmt, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["labels"] == 24
        with open_store(twin, read_only=True) as s:
            rows = [x for x in s.labels.find(s.dictionary().dictionary_id) if x["explainer"] == explainer]
            assert not s.vectors.unindexed_labels(LABELS)  # embedded for search as they were written
        assert {x["feature_id"]: x["explanation"] for x in rows} == {f: x["explanation"] for f, x in ours.items()}
        assert all(x["imported"].startswith(f"{fmt}: ") for x in rows)
        if fmt == "jsonl":  # grades come back as they were: value, interval, evidence counts
            for x in rows:
                mine, back = ours[x["feature_id"]]["scores"]["simulation"], x["scores"]["simulation"]
                assert (back["value"], back["ci"], back["n_windows"]) == (mine["value"], mine["ci"], mine["n_windows"])
            assert any(x["scores"]["simulation"]["ci"] for x in rows)
        if fmt == "neuronpedia":  # its score rows carry our scorer's name back
            assert all(x["scores"]["simulation"]["value"] == pytest.approx(
                ours[x["feature_id"]]["scores"]["simulation"]["value"]) for x in rows)
        if fmt == "delphi":  # balanced accuracy of the examples: (3/3 + right negatives / 2) / 2
            assert all(x["scores"]["detection"]["value"] == (1.0 + (x["feature_id"] % 2)) / 2 for x in rows)
    # our scorers grade what was imported, on our held-out windows, explaining nothing
    r = cli("label", "--store", twin, "--explainer", "imported", "--scorer", "embedding", "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.output)
    assert done["explained"] == 0 and done["graded"] == 24  # the newest import of each feature (delphi's)
    with open_store(twin, read_only=True) as s:
        rows = [x for x in s.labels.find(s.dictionary().dictionary_id) if x["explainer"] == "delphi"]
    assert all(x["scores"]["embedding"]["status"] in ("ok", "undefined") for x in rows)
    again = json.loads(cli("label", "--store", twin, "--explainer", "imported", "--scorer", "embedding",
                           "--json").output)
    assert (again["graded"], again["already_done"], again["without_import"]) == (0, 24, 256 - 24)
    # the feature page marks each grade an import brought with its source, beside ours
    from browser import page
    from test_browser import serving

    with serving(twin) as url, page() as pg:
        pg.goto(url + "feature.html#3")
        pg.wait_for_selector("body[data-ready='1'] #labels")
        rows = pg.locator("#labels tr.chosen").all_inner_texts()  # one per import of the feature's label
        for fmt in ("jsonl", "neuronpedia", "delphi"):
            mine = [r for r in rows if f"imported from {fmt}: " in r]
            assert mine and all(r.count("imported from ") >= 2 for r in mine), rows  # the label and its grade
        head = pg.locator("#labels tr th").all_inner_texts()
        assert {"detection", "embedding"} <= set(head)  # theirs and ours, side by side
        assert not pg.errors


def test_label_import_bad_input_is_one_line_and_writes_nothing(twin, tmp_path):
    before = len(_labels(twin))
    good = json.dumps({"feature_id": 1, "explanation": "fine"})
    cases = [
        ("jsonl", [good, "{not json"], "bad.jsonl:2: not JSON"),
        ("jsonl", [good, json.dumps({"feature_id": 999, "explanation": "x"})], "out of range"),
        ("jsonl", [json.dumps({"feature_id": 2, "explanation": ""})], "explanation is missing or empty"),
        ("jsonl", [json.dumps({"feature_id": "x", "explanation": "y"})], "is not an integer"),
        ("jsonl", [json.dumps({"feature_id": 1, "explanation": "y", "scores": {"s": {"status": "ok", "value": "abc"}}})],
         "bad.jsonl:1: score 's' value must be a finite number, not 'abc'"),
        ("jsonl", ['{"feature_id": 1, "explanation": "y", "scores": {"s": {"status": "ok", "value": NaN}}}'],
         "score 's' value must be a finite number, not nan"),
        ("jsonl", [json.dumps({"feature_id": 1, "explanation": "y",
                               "scores": {"s": {"status": "ok", "value": 0.5, "details": [1]}}})],
         "score 's' details must be a JSON object"),
        ("jsonl", [json.dumps({"feature_id": 1, "explanation": "y", "seed": "7"})], "seed must be a 64-bit integer"),
        ("jsonl", [json.dumps({"feature_id": 1, "explanation": "y", "seed": 10**23})], "seed must be a 64-bit integer"),
        ("jsonl", [json.dumps({"feature_id": 1, "explanation": "y", "scores": {"s": {"status": "ok", "value": 10**400}}})],
         "score 's' value must be a finite number"),
        ("jsonl", [json.dumps({"feature_id": 1, "explanation": "y", "sampler": {"window": 1}})],
         "bad.jsonl:1: bad sampler config (window must be at least 2"),
    ]
    for fmt, lines, words in cases:
        p = tmp_path / "bad.jsonl"
        p.write_text("\n".join(lines) + "\n")
        r = cli("ingest", "labels", p, "--store", twin, "--format", fmt)
        assert r.exit_code == 4 and words in r.output and len(r.output.strip().splitlines()) == 1, r.output
    np_dir = tmp_path / "np" / "explanations"
    np_dir.mkdir(parents=True)
    with gzip.open(np_dir / "batch-0.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"index": "3", "description": "ok", "id": "a"}) + "\n" + json.dumps({"index": "4"}) + "\n")
    r = cli("ingest", "labels", np_dir.parent, "--store", twin, "--format", "neuronpedia")
    assert r.exit_code == 4 and "batch-0.jsonl.gz:2" in r.output
    r = cli("ingest", "labels", tmp_path / "missing", "--store", twin, "--format", "delphi")
    assert r.exit_code == 4 and "no such file" in r.output
    r = cli("ingest", "labels", p, "--store", twin, "--format", "bogus")
    assert r.exit_code == 2 and "--format" in r.output
    (tmp_path / "two" / "explanations").mkdir(parents=True)
    for hook in ("layers.1", "layers.2"):
        (tmp_path / "two" / "explanations" / f"{hook}_latent0.txt").write_text('"x"')
    r = cli("ingest", "labels", tmp_path / "two", "--store", twin, "--format", "delphi")
    assert r.exit_code == 4 and "several hookpoints" in r.output
    assert len(_labels(twin)) == before  # nothing was written by any of them
