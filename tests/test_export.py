"""Exports: the JSON Schema is the code's, every JSONL line obeys it, Parquet holds the same rows."""

import json

import jsonschema
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.export import arrow_schema, json_schema
from autointerp.export.schema import SCHEMA_PATH
from autointerp.pipeline import label


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
        label(s, s.dictionary(), range(0, 8), scorers=("embedding", "simulation", _Failing()))
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
    assert r.exit_code != 0 and out.read_text() == "the previous export\n"
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind
