"""The exported label: one definition, from which the JSON Schema and the Parquet schema are both made.

`LabelRow` (with `ScoreRow` and the sampler config) is what every JSON Lines line and every Parquet row
holds. `json_schema()` turns the dataclasses into a JSON Schema (draft 2020-12); the committed copy is
`autointerp/export/labels.schema.json`, and a test checks the two are equal, so the file cannot drift
from the code (`python -m autointerp.export > autointerp/export/labels.schema.json` rewrites it). `arrow_schema()` gives the Parquet columns: free-form JSON (evidence, details, the sampler) is a
JSON text column there, a map of scores is a Parquet MAP.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import pyarrow as pa

from ..records import SamplerConfig
from ..score.base import FEATURE_LEVEL

SCHEMA_PATH = Path(__file__).with_name("labels.schema.json")
SCHEMA_ID = "https://github.com/autointerp/autointerp/labels.schema.json"

JSON = dict  # a free-form JSON object (a JSON text column in Parquet)


def _doc(text: str, **kw):
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class ScoreRow:
    """One scorer's grade of one label."""

    status: Literal["ok", "undefined", "failed"] = _doc("ok: value is set; undefined: the metric does not exist "
                                                        "on these windows (e.g. one class); failed: see reason")
    value: float | None = _doc("the grade; null unless status is ok. simulation: Pearson correlation (-1..1); "
                               "embedding: AUROC; detection, fuzzing: balanced accuracy; intruder: accuracy (0..1)")
    ci_low: float | None = _doc("lower end of the grade's 95% interval (a seeded bootstrap over the held-out "
                                "windows, activating and non-firing resampled apart); null when it has none")
    ci_high: float | None = _doc("upper end of the grade's 95% interval; null when it has none")
    n_windows: int | None = _doc("held-out windows the grade was computed on (intruder: windows in its "
                                 "questions); null for grades made before intervals were recorded")
    n_tokens: int | None = _doc("tokens in those windows")
    reason: str = _doc("why undefined or failed; empty when ok")
    version: str = _doc("the scorer's version: a method version, or model/prompt-and-settings hash")
    details: JSON = _doc("per-scorer details: per-window correlations, r², predictions, precision, recall, ...")
    created_at: datetime = _doc("when the grade was made (UTC)")


@dataclass(frozen=True)
class LabelRow:
    """One explanation of one feature, with its grades and where it came from."""

    dictionary: str = _doc("the dictionary (SAE or neuron set) the feature belongs to")
    model: str = _doc("the model the dictionary reads")
    hook: str = _doc("where in the model: a hook or module name")
    feature_id: int = _doc("the feature's index in the dictionary, 0..width-1")
    explanation: str = _doc("the label")
    chosen: bool = _doc("true for the feature's label; false for a best-of-k candidate that was not chosen")
    explainer: str = _doc("the method (offline) or model (anthropic:MODEL, openai:MODEL, compat:MODEL)")
    prompt_hash: str = _doc("hash of the prompt template and its settings, or the offline method's version")
    sampler: SamplerConfig = _doc("the sampler config the explain and held-out windows were drawn with")
    sampler_hash: str = _doc("hash of the sampler config")
    seed: int = _doc("the sampler seed")
    created_at: datetime = _doc("when the label was made (UTC)")
    evidence: JSON = _doc("what the label was derived from: the offline method's statistics, or the LLM's "
                          "template, candidate index, reply and stop reason")
    scores: dict[str, ScoreRow] = _doc("grades of the label by scorer name (embedding, simulation, detection, "
                                       "fuzzing)")
    feature_scores: dict[str, ScoreRow] = _doc("grades of the feature itself, which use no label (intruder: can "
                                               "the feature's windows be told from one where it does not fire)")


# -- from the dataclasses to schemas --------------------------------------------------------------------

def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _json_type(tp, defs: dict) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is JSON:
        return {"type": "object"}
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        out = _json_type(inner[0], defs)
        return {**out, "type": [out["type"], "null"]} if len(inner) == 1 and "type" in out else {
            "anyOf": [_json_type(a, defs) for a in args]}
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _json_type(args[1], defs)}
    if origin is list:
        return {"type": "array", "items": _json_type(args[0], defs)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # a dataclass type (never an instance here)
        if tp.__name__ not in defs:
            defs[tp.__name__] = None  # placeholder: a recursive reference stops here
            defs[tp.__name__] = _object(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple = {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"},
              bool: {"type": "boolean"}, datetime: {"type": "string", "format": "date-time"}}
    return dict(simple[tp])


def _object(cls, defs: dict) -> dict:
    hints = _hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        props[f.name] = _json_type(hints[f.name], defs)
        if f.metadata.get("doc"):
            props[f.name]["description"] = f.metadata["doc"]
    return {"type": "object", "description": (cls.__doc__ or "").strip().splitlines()[0], "properties": props,
            "required": [f.name for f in dataclasses.fields(cls)], "additionalProperties": False}


def json_schema() -> dict:
    """The JSON Schema of one exported label line."""
    defs: dict = {}
    top = _object(LabelRow, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "autointerp label", **top, "$defs": dict(sorted(defs.items()))}


def _arrow_type(tp) -> pa.DataType:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is JSON or (dataclasses.is_dataclass(tp) and tp is SamplerConfig):
        return pa.string()  # JSON text
    if origin in (types.UnionType, typing.Union):
        return _arrow_type(next(a for a in args if a is not type(None)))
    if origin is Literal:
        return pa.string()
    if origin is dict:
        return pa.map_(pa.string(), _arrow_type(args[1]))
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        return pa.struct([pa.field(f.name, _arrow_type(hints[f.name])) for f in dataclasses.fields(tp)])
    return {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
            datetime: pa.timestamp("us")}[tp]


def arrow_schema() -> pa.Schema:
    """The Parquet columns of the label export (free-form JSON and the sampler config as JSON text)."""
    hints = _hints(LabelRow)
    return pa.schema([pa.field(f.name, _arrow_type(hints[f.name]), metadata={"doc": f.metadata.get("doc", "")})
                      for f in dataclasses.fields(LabelRow)])


# -- from the store's label dicts to rows --------------------------------------------------------------

def label_row(r: dict, dictionary) -> dict:
    """A label as `Store.labels` gives it -> the exported JSON object (see LabelRow)."""
    return {"dictionary": r["dictionary"], "model": dictionary.model, "hook": dictionary.hook,
            "feature_id": r["feature_id"], "explanation": r["explanation"], "chosen": r["chosen"],
            "explainer": r["explainer"], "prompt_hash": r["prompt_hash"], "sampler": r["sampler"],
            "sampler_hash": r["sampler_hash"], "seed": r["seed"], "created_at": r["created_at"],
            "evidence": r["evidence"],
            "scores": {k: score_doc(v) for k, v in r["scores"].items() if k not in FEATURE_LEVEL},
            "feature_scores": {k: score_doc(v) for k, v in r["scores"].items() if k in FEATURE_LEVEL}}


def score_doc(v: dict) -> dict:
    """A grade as `Store.labels` gives it -> the exported object (see ScoreRow)."""
    ci = v.get("ci")
    return {"status": v["status"], "value": v["value"], "ci_low": ci[0] if ci else None,
            "ci_high": ci[1] if ci else None, "n_windows": v.get("n_windows"), "n_tokens": v.get("n_tokens"),
            "reason": v["reason"], "version": v["version"], "details": v["details"], "created_at": v["created_at"]}


def arrow_row(row: dict) -> dict:
    """An exported JSON object -> the Parquet row (JSON text where the schema says so, timestamps parsed)."""
    out = dict(row)
    for k in ("sampler", "evidence"):
        out[k] = json.dumps(row[k], sort_keys=True)
    out["created_at"] = datetime.fromisoformat(row["created_at"])
    for key in ("scores", "feature_scores"):
        out[key] = [(k, {**v, "details": json.dumps(v["details"], sort_keys=True),
                         "created_at": datetime.fromisoformat(v["created_at"])}) for k, v in row[key].items()]
    return out

