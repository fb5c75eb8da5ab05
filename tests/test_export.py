"""Exports: the JSON Schema is the code's, every JSONL line obeys it, Parquet holds the same rows."""

import json

import jsonschema
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.export import arrow_schema, html, json_schema
from autointerp.export.schema import SCHEMA_PATH
from autointerp.pipeline import LabelRun, label
from autointerp.store import open_store


def test_committed_schema_is_the_one_the_code_makes():
    # rewrite it with: python -m autointerp.export > autointerp/export/labels.schema.json
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema()
    jsonschema.Draft202012Validator.check_schema(json_schema())


class _Failing:
    """A scorer that always fails, so a failed score (value null, a reason) is exported too."""

    name, version = "broken", "1"

    def score(self, sample, explanation):
        raise RuntimeError("no grade")


@pytest.fixture
def labelled(ingested_path):
    from autointerp.store import open_store

    with open_store(ingested_path) as s:
        label(s, s.dictionary(), LabelRun(features=range(0, 8), scorers=("embedding", "simulation", _Failing())))
    return ingested_path


def test_jsonl_lines_obey_the_schema_and_parquet_holds_the_same_rows(labelled, tmp_path):
    jl, pqf = tmp_path / "labels.jsonl", tmp_path / "labels.parquet"
    for fmt, out in (("jsonl", jl), ("parquet", pqf)):
        r = CliRunner().invoke(app, ["export", "--store", str(labelled), "--format", fmt, "--out", str(out), "--json"])
        assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert len(lines) == 8
    validator = jsonschema.Draft202012Validator(json.loads(json.dumps(json_schema())),
                                                format_checker=jsonschema.FormatChecker())
    for line in lines:
        validator.validate(line)
        assert line["scores"]["broken"] == {**line["scores"]["broken"], "status": "failed", "value": None}
    bad = {**lines[0], "scores": {"x": {**lines[0]["scores"]["embedding"], "status": "great"}}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    table = pq.read_table(pqf)
    assert table.schema.remove_metadata().equals(arrow_schema().remove_metadata(), check_metadata=False)
    rows = table.to_pylist()
    assert [r["feature_id"] for r in rows] == [x["feature_id"] for x in lines]
    for row, line in zip(rows, lines):
        assert row["explanation"] == line["explanation"] and json.loads(row["sampler"]) == line["sampler"]
        scores = dict(row["scores"])
        assert set(scores) == set(line["scores"])
        for k, v in line["scores"].items():
            assert scores[k]["value"] == v["value"] and json.loads(scores[k]["details"]) == v["details"]
            assert scores[k]["created_at"].isoformat() == v["created_at"]


def test_a_failed_export_leaves_the_old_file_alone(labelled, tmp_path):
    out = tmp_path / "labels.jsonl"
    out.write_text("the previous export\n")
    r = CliRunner().invoke(app, ["export", "--store", str(labelled), "--out", str(out), "--dictionary", "nope"])
    assert r.exit_code == 3 and "no dictionary named 'nope'" in r.stderr
    assert out.read_text() == "the previous export\n"
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


# -- Neuronpedia -----------------------------------------------------------------------------------------

def _lines(path):
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(x) for x in fh]


class _Detection:
    """A scorer plugin with an LLM scorer's name and version, so its Neuronpedia type is checked too."""

    name, version = "detection", "anthropic:claude-x/0123abcd"

    def score(self, sample, explanation):
        from autointerp.records import Score

        return Score(self.name, self.version, "ok", 0.75, "", {"n_positive": 3}, None)


def _np_export(path, out):
    r = CliRunner().invoke(app, ["export", "--store", str(path), "--format", "neuronpedia", "--out", str(out),
                                 "--model-id", "test-model", "--source-id", "3-res-test", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_neuronpedia_export_has_its_layout_columns_and_score_types(ingested_path, tmp_path):
    from autointerp.store import open_store

    with open_store(ingested_path) as s:
        d = s.dictionary()
        label(s, d, LabelRun(features=range(0, 6), scorers=("embedding", "simulation", _Failing(), _Detection())))
    out = tmp_path / "np"
    res = _np_export(ingested_path, out)
    src = out / "v1" / "test-model" / "3-res-test"
    assert res["features"] == d.width and res["explanations"] == 6 and res["activations"] > 6 * 30
    assert sorted(p.name for p in src.iterdir()) == ["activations", "explanation_scores", "explanations", "features"]
    feats = [x for p in sorted((src / "features").iterdir()) for x in _lines(p)]
    assert [x["index"] for x in feats] == [str(i) for i in range(d.width)]  # index is a string there
    assert all(x["layer"] == "3-res-test" and x["modelId"] == "test-model" for x in feats)
    expl = _lines(src / "explanations" / "batch-0.jsonl.gz")
    assert len({tuple(sorted(x)) for x in expl}) == 1  # one key set: the importer reads columns off line 1
    assert {x["typeName"] for x in expl} == {"autointerp_offline"} and expl[0]["explanationModelName"] == "autointerp-offline"
    scores = _lines(src / "explanation_scores" / "batch-0.jsonl.gz")
    by_type = {}
    for x in scores:
        by_type.setdefault(x["explanationScoreTypeName"], []).append(x)
        assert x["explanationId"] in {e["id"] for e in expl} and isinstance(x["jsonDetails"], str)
    # failed grades are not exported (value is required there); the others map to Neuronpedia's types
    assert set(by_type) == {"eleuther_embedding", "autointerp_simulation", "eleuther_recall"}
    assert {x["explanationScoreModelName"] for x in by_type["eleuther_embedding"]} == {"all-MiniLM-L6-v2"}
    assert {x["explanationScoreModelName"] for x in by_type["eleuther_recall"]} == {"claude-x"}
    acts = _lines(src / "activations" / "batch-0.jsonl.gz")
    for a in acts:
        assert len(a["tokens"]) == len(a["values"]) and a["maxValue"] == max(a["values"])
        assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"]
        assert a["binMin"] == -1 or a["binMin"] <= a["maxValue"] <= a["binMax"] + 1e-6
    config = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in (out / "v1" / "config").iterdir()}
    assert {r["name"] for r in config["explanation_score_type"]} == set(by_type)
    assert {r["name"] for r in config["explanation_type"]} == {"autointerp_offline"}
    again = _np_export(ingested_path, out)  # the same labels keep their ids; nothing left beside the folder
    assert again == res and _lines(src / "explanations" / "batch-0.jsonl.gz") == expl
    assert sorted(p.name for p in src.parent.iterdir()) == ["3-res-test"]


def test_neuronpedia_and_saedashboard_activations_import_and_label(ingested_path, tmp_path):
    """A dictionary seen only through Neuronpedia (or SAEDashboard) JSON is ingested and labelled here:
    its token detectors get their trigger tokens as labels."""
    import re

    from autointerp.store import open_store

    def trigger(text):  # the first token a label quotes
        return re.findall(r'"((?:[^"\\]|\\.)*)"', text)[0]

    out = tmp_path / "np"
    with open_store(ingested_path) as s:
        label(s, s.dictionary(), LabelRun(features=range(4), scorers=()))
        triggers = [trigger(r["explanation"]) for r in s.labels.find()]
    _np_export(ingested_path, out)
    src = out / "v1" / "test-model" / "3-res-test"
    rows = [x for p in sorted((src / "activations").iterdir()) for x in _lines(p)]
    dash = {"model_id": "test-model", "layer": 3, "sae_set": "res-test", "features": []}
    for f in sorted({int(r["index"]) for r in rows}):
        dash["features"].append({"feature_index": f, "neg_str": [], "pos_str": [], "frac_nonzero": 0.0,
                                 "activations": [{"tokens": r["tokens"], "values": r["values"], "bin_min": r["binMin"],
                                                  "bin_max": r["binMax"], "bin_contains": r["binContains"]}
                                                 for r in rows if int(r["index"]) == f]})
    (tmp_path / "dash").mkdir()
    (tmp_path / "dash" / "batch-0.json").write_text(json.dumps(dash))
    got = {}
    for name, path in (("np", src), ("dash", tmp_path / "dash")):
        db = tmp_path / f"{name}.duckdb"
        r = CliRunner().invoke(app, ["ingest", "neuronpedia", str(path), "--store", str(db), "--dictionary", name,
                                     "--json"])
        assert r.exit_code == 0, r.output
        got[name] = json.loads(r.stdout)["ingested"][0]
        with open_store(db) as s:
            nd = s.dictionary(name)
            assert label(s, nd, LabelRun(features=range(4), scorers=())).explained == 4
            assert [trigger(r["explanation"]) for r in s.labels.find(nd.dictionary_id)] == triggers
    assert got["np"]["model"] == "test-model" and got["np"]["hook"] == "3-res-test"
    assert got["dash"]["hook"] == "3-res-test" and got["dash"]["nonzeros"] == got["np"]["nonzeros"]
    assert got["np"]["contexts"] <= got["np"]["records"]  # a text shown for several features is one context


def test_neuronpedia_import_rejects_bad_records_and_keeps_the_store(tmp_path):
    import gzip

    from autointerp.store import Store

    store = Store(tmp_path / "s.duckdb")
    before = store.content_digest()
    store.close()
    folder = tmp_path / "bad" / "activations"
    folder.mkdir(parents=True)
    good = {"index": "0", "tokens": ["a", "b"], "values": [0.0, 1.5], "modelId": "m", "layer": "0-x"}
    for bad, message in [({**good, "values": [1.0]}, "1 values for 2 tokens"),
                         ({**good, "index": "x"}, "not an integer"),
                         ({**good, "values": [1.0, float("nan")]}, "finite numbers"),
                         ({**good, "tokens": "ab"}, "list of strings")]:
        with gzip.open(folder / "batch-0.jsonl.gz", "wt") as fh:
            fh.write(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        r = CliRunner().invoke(app, ["ingest", "neuronpedia", str(folder.parent), "--store", str(store.path),
                                     "--dictionary", "d"])
        assert r.exit_code == 4 and message in r.output and "line 2" in r.output, r.output
    with Store(store.path) as s:
        assert s.content_digest() == before


# -- the static HTML export: sharded, and a killed export cleaned up -----------------------------------

def test_static_export_shards_feature_data_and_survives_a_killed_export(labelled_24, tmp_path, monkeypatch):
    monkeypatch.setattr(html, "FEATURE_SHARD", 8)
    monkeypatch.setattr(html, "SHARD", 10)
    out = tmp_path / "site"
    stale = tmp_path / ".site.autointerp-tmp"  # what a killed export leaves
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "junk.js").write_text("x")
    with open_store(labelled_24, read_only=True) as s:
        res = html.write_html(s, out)
    assert not stale.exists()
    files = sorted(p.name for p in (out / "data" / "f").iterdir())
    assert files == ["0.js", "1.js", "2.js"]  # the 24 labelled features, 8 a file; none for the 232 others
    assert res["pages"] == 24 and res["listed"] == 24 and res["shards"] == 3 and not res["capped"]
    doc = (out / "data" / "f" / "1.js").read_text()
    assert doc.startswith("AI.features(1, ") and '"8": ' in doc and '"16": ' not in doc
    with open_store(labelled_24, read_only=True) as s:
        sub = html.write_html(s, tmp_path / "sub", features=[3, 9, 100])
        assert sub["listed"] == 2 and sub["pages"] == 2  # 100 has no label
        monkeypatch.setattr(html, "INDEX_CAP", 5)
        capped = html.write_html(s, tmp_path / "capped", all_features=True)
    meta = (tmp_path / "capped" / "data" / "meta.js").read_text()
    assert capped["capped"] and capped["index_rows"] == 5 and '"capped": true' in meta
    assert capped["pages"] > 24  # unlabelled features that fire get pages when asked
    (tmp_path / "notours").mkdir()
    with open_store(labelled_24, read_only=True) as s:
        with pytest.raises(Exception, match="not an autointerp browser"):
            html.write_html(s, tmp_path / "notours")
    assert not (tmp_path / ".notours.autointerp-tmp").exists()
