"""Search by meaning through the CLI: `autointerp search` finds a detector by its label."""

import json
import shutil

from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.store import Store, open_store

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_search_cli_finds_a_detector_by_its_label(labelled_24, tmp_path):
    with open_store(labelled_24, read_only=True) as s:
        texts = {r["feature_id"]: r["explanation"] for r in s.labels.find(s.dictionary().dictionary_id)}
    r = cli("search", texts[2], "--store", labelled_24, "--limit", "3", "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)["rows"]
    assert hits[0]["feature"] == 2 and hits[0]["label"] == texts[2] and hits[0]["top"]["tokens"]
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)
    text = cli("search", texts[2], "--store", labelled_24, "--limit", "1")
    assert text.exit_code == 0 and f"#2\t{texts[2]}" in text.output
    for bad, code in ((["--limit", "0"], 2), (["--limit", "5000"], 2), (["--dictionary", "nope"], 3)):
        r = cli("search", "x", "--store", labelled_24, *bad)
        assert r.exit_code == code and len(r.output.strip().splitlines()) == 1, r.output
    # labels written before search existed get embedded on first use
    old = tmp_path / "old.duckdb"
    shutil.copyfile(labelled_24, old)
    with Store(old) as s:
        with s.transaction() as w:
            w.raw.con.execute("DELETE FROM label_vectors")
    r = cli("search", texts[2], "--store", old, "--limit", "1", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["rows"][0]["feature"] == 2
