"""Import labels made elsewhere, so our scorers can grade them on the same held-out windows as ours.

Three formats:

- `neuronpedia`: a Neuronpedia export source folder (`explanations/batch-N.jsonl.gz`, and
  `explanation_scores/batch-N.jsonl.gz` when present) or one explanations batch file. Each label
  keeps its model (`explanationModelName`) and type (`typeName`); each score its type and model.
- `delphi`: delphi's results folder (`explanations/<hookpoint>_latent<N>.txt`, each a JSON string,
  and `scores/<scorer>/<hookpoint>_latent<N>.txt` when present) or the explanations folder itself.
  delphi's files carry no model or prompt. A classifier score (detection, fuzz: a list of examples
  with `activating` and `prediction`) is stored as its balanced accuracy, the examples' counts in
  its details.
- `jsonl`: our own `export --format jsonl` (a round trip keeps text, provenance and grades). Each
  line goes to the dictionary its `dictionary` field names (an export of several dictionaries goes
  back into each); a line naming none goes to `dictionary` (default: the store's only one). A line
  naming a dictionary the store lacks, or another than `dictionary` when that is given, is an
  error naming the file, line and dictionary: labels never land in a dictionary they were not made for.

An imported label's explainer is "FORMAT:THEIR-MODEL" (so it never replaces one of ours), its
`imported` column says where it came from, and it is a current label of its feature: `label
--explainer imported --scorer ...` grades it like our own. The import is one transaction (nothing is written
if any line is bad: the error names the file and line); the labels' embeddings for search are computed
after it, by the caller (`ingest labels` unless `--no-index`; else `autointerp search` on first use).
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, NoReturn, overload

from ..clock import utcnow
from ..errors import AutointerpError, IngestError
from ..records import Dictionary, Explanation, FeatureLabel, SamplerConfig, Score
from ..store import Store

FORMATS = ("neuronpedia", "delphi", "jsonl")
CHUNK = 20_000  # labels written per statement batch
_LATENT = re.compile(r"^(?P<hook>.+)_latent(?P<n>\d+)\.txt$")


@dataclass(slots=True)
class _Label:
    """One imported explanation before it becomes a FeatureLabel (a sampler, evidence or scores left out mean
    the defaults)."""

    feature: int
    text: str
    explainer: str
    kind: str
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    seed: int = 0
    chosen: bool = True
    created: datetime | None = None
    evidence: dict = field(default_factory=dict)
    scores: list[Score] = field(default_factory=list)
    dictionary: Dictionary | None = None  # jsonl: the Dictionary its line names (None: the import's dictionary)

    def __post_init__(self) -> None:
        self.scores = list(self.scores)


def _fail(where: str, msg: str) -> NoReturn:
    raise IngestError(f"{where}: {msg}")


def _lines(path: Path) -> Iterator[tuple[str, dict]]:
    """(file:line, object) for each line of a JSON Lines file, gzipped or not."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{i}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    _fail(where, f"not JSON ({e.msg})")
                if not isinstance(obj, dict):
                    _fail(where, "a line must be a JSON object")
                yield where, obj
    except (OSError, EOFError, UnicodeDecodeError) as e:
        _fail(str(path), f"cannot read ({e})")


def _feature(where: str, value, width: int) -> int:
    try:
        f = int(value)
    except (TypeError, ValueError):
        _fail(where, f"feature index {value!r} is not an integer")
    if not 0 <= f < width:
        _fail(where, f"feature {f} is out of range for a dictionary of width {width}")
    return f


def _text(where: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(where, "the explanation is missing or empty")
    return value


def _time(value) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
        except ValueError:
            return None
    return None


@overload
def _number(where: str, what: str, value, *, optional: Literal[False] = False) -> float: ...
@overload
def _number(where: str, what: str, value, *, optional: bool) -> float | None: ...
def _number(where: str, what: str, value, *, optional: bool = False) -> float | None:
    """A finite number (a grade's value, an interval's end); NaN, Infinity, text or a boolean: a one-line error."""
    if value is None and optional:
        return None
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        ok = False
    if not ok:
        _fail(where, f"{what} must be a finite number, not {repr(value)[:40]}")
    return float(value)


def _details(where: str, what: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(where, f"{what} details must be a JSON object, not {type(value).__name__}")
    return value


def _grade(where: str, name: str, sc) -> Score:
    """One grade of our own JSONL export (scores / feature_scores), checked field by field."""
    if not isinstance(sc, dict) or sc.get("status") not in ("ok", "undefined", "failed"):
        _fail(where, f"score {name!r} needs a status of ok, undefined or failed")
    ok = sc["status"] == "ok"
    value = _number(where, f"score {name!r} value", sc.get("value"), optional=not ok)
    lo = _number(where, f"score {name!r} ci_low", sc.get("ci_low"), optional=True)
    hi = _number(where, f"score {name!r} ci_high", sc.get("ci_high"), optional=True)
    if (lo is None) != (hi is None) or (lo is not None and hi is not None and not lo <= hi):
        _fail(where, f"score {name!r} interval must have both ends, low <= high (got {lo!r}, {hi!r})")
    n_windows, n_tokens = (sc.get(k) or 0 for k in ("n_windows", "n_tokens"))
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in (n_windows, n_tokens)):
        _fail(where, f"score {name!r} n_windows and n_tokens must be counts")
    return Score(name, str(sc.get("version", "")), sc["status"], value if ok else None, str(sc.get("reason", "")),
                 _details(where, f"score {name!r}", sc.get("details")), _time(sc.get("created_at")) or utcnow(),
                 None if lo is None or hi is None else (lo, hi), n_windows, n_tokens)


# -- the three readers ------------------------------------------------------------------------------

def _neuronpedia(path: Path, width: int) -> Iterator[_Label]:
    if path.is_file():
        files, score_files = [path], []
    else:
        files = sorted((path / "explanations").glob("batch-*.jsonl*"), key=lambda p: _batch_no(p))
        score_files = sorted((path / "explanation_scores").glob("batch-*.jsonl*"), key=lambda p: _batch_no(p))
        if not files:
            _fail(str(path), "no explanations/batch-N.jsonl.gz here (a Neuronpedia export source folder)")
    scores: dict[str, list[Score]] = {}
    for sf in score_files:
        for where, row in _lines(sf):
            eid = row.get("explanationId")
            if not isinstance(eid, str):
                _fail(where, "a score needs an explanationId")
            value = _number(where, "a score's value", row.get("value"))
            details = row.get("jsonDetails")
            try:
                details = json.loads(details) if isinstance(details, str) and details else (details or {})
            except json.JSONDecodeError:
                details = {"jsonDetails": details}
            details = details if isinstance(details, dict) else {"jsonDetails": details}
            name = details.pop("autointerp_scorer", None) or str(row.get("explanationScoreTypeName") or "neuronpedia")
            version = details.pop("autointerp_version", None) or str(row.get("explanationScoreModelName") or "")
            scores.setdefault(eid, []).append(Score(name, version, "ok", float(value), "", details,
                                                    _time(row.get("createdAt")) or utcnow()))
    for f in files:
        for where, row in _lines(f):
            model = str(row.get("explanationModelName") or "unknown")
            rid = row.get("id")
            yield _Label(_feature(where, row.get("index"), width), _text(where, row.get("description")),
                         f"neuronpedia:{model}", str(row.get("typeName") or "neuronpedia"),
                         evidence={"neuronpedia_id": rid, "modelId": row.get("modelId"),
                                   "layer": row.get("layer"), "authorId": row.get("authorId")},
                         scores=scores.get(rid, []) if isinstance(rid, str) else [])


def _batch_no(p: Path) -> int:
    m = re.search(r"batch-(\d+)", p.name)
    return int(m.group(1)) if m else 0


def _delphi_score(where: str, value) -> tuple[float, dict]:
    """delphi's score file: a classifier's examples (balanced accuracy) or a simulator's correlation."""
    if isinstance(value, list) and value and all(isinstance(x, dict) and "activating" in x for x in value):
        pos = [x for x in value if x["activating"]]
        neg = [x for x in value if not x["activating"]]
        said = [bool(x.get("prediction")) for x in value]
        if not pos or not neg:
            _fail(where, "a classifier score needs both activating and non-activating examples")
        tp = sum(s for s, x in zip(said, value) if x["activating"])
        tn = sum(not s for s, x in zip(said, value) if not x["activating"])
        return (tp / len(pos) + tn / len(neg)) / 2, {"n_activating": len(pos), "n_nonfiring": len(neg),
                                                      "metric": "balanced_accuracy"}
    sims = value if isinstance(value, list) else [value]
    for s in sims:
        if isinstance(s, dict) and isinstance(s.get("ev_correlation_score"), (int, float)):
            return float(s["ev_correlation_score"]), {"metric": "ev_correlation_score"}
    _fail(where, "not a delphi score (a list of examples with 'activating', or an 'ev_correlation_score')")


def _delphi(path: Path, width: int) -> Iterator[_Label]:
    folder = path / "explanations" if (path / "explanations").is_dir() else path
    if not folder.is_dir():
        _fail(str(path), "not a folder (delphi's results folder, or its explanations folder)")
    files = [(m, p) for p in sorted(folder.iterdir()) if (m := _LATENT.match(p.name))]
    if not files:
        _fail(str(folder), "no <hookpoint>_latent<N>.txt files here")
    hooks = sorted({m["hook"] for m, _ in files})
    if len(hooks) > 1:
        _fail(str(folder), f"explanations of several hookpoints ({', '.join(hooks[:4])}): import one folder per "
                           "dictionary")
    score_root = folder.parent / "scores"
    scorers = sorted(p for p in score_root.iterdir() if p.is_dir()) if score_root.is_dir() else []
    for m, p in files:
        where = str(p)
        try:
            text = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            _fail(where, f"not a JSON string ({e})")
        grades = []
        for sdir in scorers:
            sp = sdir / p.name
            if sp.exists():
                try:
                    raw = json.loads(sp.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                    _fail(str(sp), f"not JSON ({e})")
                value, details = _delphi_score(str(sp), raw)
                grades.append(Score(sdir.name, "delphi", "ok", round(value, 6), "", details, utcnow()))
        yield _Label(_feature(where, m["n"], width), _text(where, text), "delphi", "delphi",
                     evidence={"hookpoint": m["hook"]}, scores=grades)


def _jsonl(path: Path, width: int | None,
           dictionary_of: Callable[[str, object], Dictionary] | None = None) -> Iterator[_Label]:
    """`dictionary_of(where, name)`: the Dictionary a line's `dictionary` field names (a one-line error when
    the store has none of that name); its width bounds the line's feature (else `width` does: one of the two
    is given)."""
    for where, row in _lines(path):
        d = dictionary_of(where, row.get("dictionary")) if dictionary_of is not None else None
        if d is not None:
            width = d.width
        if width is None:
            raise ValueError("_jsonl needs a width or dictionary_of")
        try:
            sampler = (SamplerConfig.from_options(**row["sampler"]) if isinstance(row.get("sampler"), dict)
                       else SamplerConfig())  # within what the store and sampler hold: the browser re-draws it
        except (TypeError, AutointerpError) as e:
            _fail(where, f"bad sampler config ({e})")
        grades = []
        for key in ("scores", "feature_scores"):  # feature_scores: grades of the feature (intruder)
            got = row.get(key) or {}
            if not isinstance(got, dict):
                _fail(where, f"{key} must be a JSON object of scorer -> grade")
            grades += [_grade(where, name, sc) for name, sc in got.items()]
        seed = row.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**63:
            _fail(where, f"seed must be a 64-bit integer, not {repr(seed)[:40]}")
        evidence = row.get("evidence")
        yield _Label(_feature(where, row.get("feature_id"), width), _text(where, row.get("explanation")),
                     f"jsonl:{row.get('explainer', 'unknown')}", str(row.get("prompt_hash", "")), sampler,
                     seed, bool(row.get("chosen", True)),
                     _time(row.get("created_at")), evidence if isinstance(evidence, dict) else {},
                     grades, d)


READERS = {"neuronpedia": _neuronpedia, "delphi": _delphi, "jsonl": _jsonl}


def _feature_labels(d: Dictionary, labels: list[_Label], source: str) -> list[FeatureLabel]:
    """Group explanations by (feature, explainer, type, sampler, seed): one FeatureLabel each, the first
    chosen one (or the first) its label, the others candidates."""
    groups: dict[tuple, list[_Label]] = {}
    for x in labels:
        groups.setdefault((x.feature, x.explainer, x.kind, x.sampler.hash, x.seed), []).append(x)
    now = utcnow()
    out = []
    for (feature, explainer, kind, _, seed), xs in groups.items():
        chosen = next((i for i, x in enumerate(xs) if x.chosen), 0)
        expl = tuple((Explanation(dictionary=d.name, feature=feature, text=x.text, explainer=explainer,
                                  prompt_hash=kind, sampler=x.sampler, seed=seed, evidence=x.evidence,
                                  created_at=x.created or now, imported=source), tuple(x.scores)) for x in xs)
        out.append(FeatureLabel(dictionary=d.name, feature=feature, explainer=explainer, prompt_hash=kind,
                                sampler=xs[0].sampler, seed=seed, status="ok", explanations=expl, chosen=chosen))
    return out


def import_labels(store: Store, path: str | Path, fmt: str, dictionary: str | None = None,
                  progress=None) -> dict:
    """Read every label of `path` (format `fmt`) into the dictionary, in one transaction (a bad line anywhere:
    nothing is imported); the transaction holds the file for the reading and the inserts only. Embedding the
    new labels for search is the caller's next step (`search.index_missing` of each of `dictionary_ids`, in
    commits of its own: the CLI does it; what is left unembedded, `search` embeds on first use)."""
    if fmt not in READERS:
        raise IngestError(f"unknown label format {fmt!r}; choose from {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: no such file or folder")
    if fmt == "jsonl":  # each line names its dictionary: --dictionary only for lines that name none
        d = store.dictionary(dictionary) if dictionary is not None else None
        reader = _jsonl(path, None, _line_dictionary(store, d))
    else:
        d = store.dictionary(dictionary)
        reader = READERS[fmt](path, d.width)
    source = f"{fmt}: {path.resolve()}"
    counts = {"labels": 0, "features": 0, "scores": 0}
    features: set[tuple[int, int]] = set()  # (dictionary id, feature) written
    names: list[str] = []  # the dictionaries written to, in order
    with store.transaction() as w:
        batch: list[_Label] = []  # labels of one dictionary, `batch_d`
        batch_d: Dictionary | None = None

        def flush(bd: Dictionary) -> None:
            rows = _feature_labels(bd, batch, source)
            w.labels.add_labels(bd.dictionary_id, rows)
            counts["labels"] += sum(len(r.explanations) for r in rows)
            counts["scores"] += sum(len(s) for r in rows for _, s in r.explanations)
            features.update((bd.dictionary_id, x.feature) for x in batch)
            if bd.name not in names:
                names.append(bd.name)
            if progress is not None:
                progress.update(len(batch))
            batch.clear()

        for x in reader:
            xd = x.dictionary = x.dictionary or d
            # a jsonl line's dictionary_of gives it one; the other formats' labels all go to d
            assert xd is not None
            last = batch[-1] if batch else None
            if last is not None and batch_d is not None and (xd.dictionary_id != batch_d.dictionary_id
                                                             or (len(batch) >= CHUNK and x.feature != last.feature)):
                flush(batch_d)  # one dictionary a batch; a feature's candidates stay together
                last = None
            if (xd.dictionary_id, x.feature) in features and (last is None or x.feature != last.feature):
                # written with an earlier batch: this one would replace it, not join it
                raise IngestError(f"{path}: feature {x.feature} of {xd.name} appears again after other "
                                  "labels; a file must keep each feature's labels together (sort it by dictionary "
                                  "and feature)")
            batch.append(x)
            batch_d = xd
        if batch and batch_d is not None:
            flush(batch_d)
        if not counts["labels"]:
            raise IngestError(f"{path}: no labels found")
    counts["features"] = len(features)
    return {"dictionary": ", ".join(names), "dictionaries": names, "format": fmt, "source": str(path), **counts,
            "dictionary_ids": sorted({did for did, _ in features})}


def _line_dictionary(store: Store, given: Dictionary | None) -> Callable[[str, object], Dictionary]:
    """For `_jsonl`: the Dictionary a line's `dictionary` field names. A line naming none goes to `given`
    (--dictionary), else to the store's only dictionary; a name the store lacks, or another than `given`,
    is a one-line error naming the file, line and dictionary."""
    known: dict[str, Dictionary] = {}

    def dictionary_of(where: str, name: object) -> Dictionary:
        if name is not None and not isinstance(name, str):
            _fail(where, f"dictionary must be a dictionary's name, not {repr(name)[:40]}")
        if given is not None and name in (None, given.name):
            return given
        if given is not None:
            _fail(where, f"the line is of dictionary {name!r}, not --dictionary {given.name!r} (leave --dictionary "
                         "out to import each line into the dictionary it names)")
        if not known:
            known.update((x.name, x) for x in store.dictionaries())
        if name is None:
            if len(known) != 1:
                _fail(where, "the line names no dictionary and the store has "
                             + (f"{len(known)} ({', '.join(sorted(known))}): pass --dictionary" if known else "none"))
            return next(iter(known.values()))
        if name not in known:
            _fail(where, f"dictionary {name!r} is not in the store (it has "
                         + (", ".join(repr(k) for k in sorted(known)) or "none") + ")")
        return known[name]

    return dictionary_of
