"""What a million features needs, at CI size: label import in three formats (round trips, grading what was
imported, bad input), the sharded static export, the stored context encoding, and `autointerp search`."""

import gzip
import json
import shutil

import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.export import html
from autointerp.ingest import ingest_delphi
from autointerp.pipeline import LabelRun, label
from autointerp.search import LABELS
from autointerp.store import Store, open_store

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def labelled(ingested_path):
    with open_store(ingested_path) as s:
        label(s, s.dictionary(), LabelRun(features="0-23", scorers=("embedding", "simulation")))
    return ingested_path


@pytest.fixture
def twin(tmp_path, delphi_cache):
    """A second store over the same activations (the same cache, ingested again): where imports go."""
    folder, _ = delphi_cache(n_seq=300)
    path = tmp_path / "twin.duckdb"
    with Store(path) as s:
        ingest_delphi(s, folder)
    return path


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


def test_label_import_round_trips_each_format_and_gets_graded(labelled, twin, tmp_path):
    ours = _labels(labelled)
    assert len(ours) == 24
    out = tmp_path / "labels.jsonl"
    assert cli("export", "--store", labelled, "--out", out).exit_code == 0
    assert cli("export", "--store", labelled, "--out", tmp_path / "np", "--format", "neuronpedia", "--model-id", "m",
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
    assert again["graded"] == 0 and again["already_done"] == 256


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


def test_static_export_shards_feature_data_and_survives_a_killed_export(labelled, tmp_path, monkeypatch):
    monkeypatch.setattr(html, "FEATURE_SHARD", 8)
    monkeypatch.setattr(html, "SHARD", 10)
    out = tmp_path / "site"
    stale = tmp_path / ".site.autointerp-tmp"  # what a killed export leaves
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "junk.js").write_text("x")
    with open_store(labelled, read_only=True) as s:
        res = html.write_html(s, out)
    assert not stale.exists()
    files = sorted(p.name for p in (out / "data" / "f").iterdir())
    assert files == ["0.js", "1.js", "2.js"]  # the 24 labelled features, 8 a file; none for the 232 others
    assert res["pages"] == 24 and res["listed"] == 24 and res["shards"] == 3 and not res["capped"]
    doc = (out / "data" / "f" / "1.js").read_text()
    assert doc.startswith("AI.features(1, ") and '"8": ' in doc and '"16": ' not in doc
    with open_store(labelled, read_only=True) as s:
        sub = html.write_html(s, tmp_path / "sub", features=[3, 9, 100])
        assert sub["listed"] == 2 and sub["pages"] == 2  # 100 has no label
        monkeypatch.setattr(html, "INDEX_CAP", 5)
        capped = html.write_html(s, tmp_path / "capped", all_features=True)
    meta = (tmp_path / "capped" / "data" / "meta.js").read_text()
    assert capped["capped"] and capped["index_rows"] == 5 and '"capped": true' in meta
    assert capped["pages"] > 24  # unlabelled features that fire get pages when asked
    (tmp_path / "notours").mkdir()
    with open_store(labelled, read_only=True) as s:
        with pytest.raises(Exception, match="not an autointerp browser"):
            html.write_html(s, tmp_path / "notours")
    assert not (tmp_path / ".notours.autointerp-tmp").exists()


def test_context_encoding_is_paid_once_per_store(labelled):
    from autointerp.sample import Sampler
    from autointerp.score import make_scorers
    from autointerp.embed import ENCODING

    with open_store(labelled, read_only=True) as s:
        d = s.dictionary()
        assert len(s.vectors.encoded_contexts(d.corpus_id, ENCODING)) == s.corpus(d.corpus_id).n_contexts  # labelling kept them
    with Store(labelled) as s:  # as if a run had stopped half way
        with s.transaction() as w:
            w.raw.con.execute("DELETE FROM context_vectors WHERE context_id >= 100")
    kept = 100
    r = cli("encode", "--store", labelled, "--json")
    assert r.exit_code == 0, r.output
    with open_store(labelled, read_only=True) as s:
        n = s.corpus(d.corpus_id).n_contexts
        assert json.loads(r.output)["encoded"] == n - kept and len(s.vectors.encoded_contexts(d.corpus_id, ENCODING)) == n
        emb, = make_scorers(["embedding"], s, d)
        for smp in Sampler(s, d).sample_many(range(30, 40)):
            if smp.status == "ok":
                emb.score(smp, _expl(smp))
        assert emb.encoder.encoded == 0  # read from the store, never run through the model again
    again = cli("encode", "--store", labelled, "--json")
    assert json.loads(again.output)["encoded"] == 0


def _expl(smp):
    from autointerp.records import Explanation

    return Explanation(smp.dictionary, smp.feature, "a word", "given", "", smp.config, smp.seed)


def test_search_cli_finds_a_detector_by_its_label(labelled, tmp_path):
    with open_store(labelled, read_only=True) as s:
        texts = {r["feature_id"]: r["explanation"] for r in s.labels.find(s.dictionary().dictionary_id)}
    r = cli("search", texts[2], "--store", labelled, "--limit", "3", "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)["rows"]
    assert hits[0]["feature"] == 2 and hits[0]["label"] == texts[2] and hits[0]["top"]["tokens"]
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)
    text = cli("search", texts[2], "--store", labelled, "--limit", "1")
    assert text.exit_code == 0 and f"#2\t{texts[2]}" in text.output
    for bad, code in ((["--limit", "0"], 2), (["--limit", "5000"], 2), (["--dictionary", "nope"], 3)):
        r = cli("search", "x", "--store", labelled, *bad)
        assert r.exit_code == code and len(r.output.strip().splitlines()) == 1, r.output
    # labels written before search existed get embedded on first use
    old = tmp_path / "old.duckdb"
    shutil.copyfile(labelled, old)
    with Store(old) as s:
        with s.transaction() as w:
            w.raw.con.execute("DELETE FROM label_vectors")
    r = cli("search", texts[2], "--store", old, "--limit", "1", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["rows"][0]["feature"] == 2
