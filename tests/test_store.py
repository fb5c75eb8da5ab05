import os
import duckdb
import numpy as np
import pytest

from autointerp.errors import IngestError, StoreCorrupt, StoreError
from autointerp.store import LATEST_VERSION, Store


def _tiny(w, name="d", values=(1.0, 2.0, 0.5)):
    cid, created = w.activations.add_corpus(name="c", tokenizer="t", ctx_len=4, fingerprint="fp", source="s")
    if created:
        w.activations.add_contexts(cid, [np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8])], [list("abcd"), list("efgh")])
    b = w.activations.add_dictionary(name=name, corpus_id=cid, model="m", hook="h", width=3, kind="external", source="s",
                         sorted_input=False)
    b.append([2, 0, 0], [1, 0, 1], [3, 1, 0], list(values))
    b.finish()


def test_migrations_are_recorded(store):
    assert store.schema_version() == LATEST_VERSION
    rows = store.query("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))


def test_newer_schema_is_refused_and_left_alone(tmp_path):
    p = tmp_path / "s.duckdb"
    Store(p).close()
    con = duckdb.connect(str(p))
    con.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', now())", [LATEST_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="newer than this autointerp supports"):
        Store(p)
    con = duckdb.connect(str(p))
    assert con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == LATEST_VERSION + 1


def test_not_a_store_is_a_clear_error(tmp_path):
    p = tmp_path / "junk.duckdb"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorrupt, match="damaged or not a DuckDB store"):
        Store(p)
    with pytest.raises(StoreError, match="no store at"):
        Store(tmp_path / "missing.duckdb", read_only=True)


def test_round_trip_and_stats(store):
    with store.transaction() as w:
        _tiny(w)
    d = store.dictionary()
    r = store.activations.read_activations(d.dictionary_id, 0, 2)
    # clustered by (feature, context, position)
    assert r["feature"].tolist() == [0, 0, 2]
    assert r["context_id"].tolist() == [0, 1, 1]
    st = {s.feature: s for s in store.activations.feature_stats(d.dictionary_id)}
    assert st[0].n_firing == 2 and st[0].max_value == 2.0 and st[0].mean_value == pytest.approx(1.25)
    assert st[0].density == pytest.approx(2 / 8)
    assert st[0].quantile_edges[4] == pytest.approx(np.quantile([2.0, 0.5], 0.5))
    assert (st[0].max_context, st[0].max_position) == (0, 1)
    assert st[1].n_firing == 0 and st[1].max_value is None  # dead features are listed too
    ctx = store.activations.read_contexts(1, np.array([1]), with_strings=True)
    assert ctx["tokens"] == list("efgh") and ctx["token_ids"].tolist() == [5, 6, 7, 8]


def test_failed_write_leaves_store_unchanged(store):
    with store.transaction() as w:
        _tiny(w)
    before = store.content_digest()
    with pytest.raises(IngestError, match="NaN or Inf"):
        with store.transaction() as w:
            _tiny(w, name="e", values=(1.0, float("nan"), 2.0))
    assert store.content_digest() == before
    with pytest.raises(IngestError, match="already exists"):
        with store.transaction() as w:
            _tiny(w)
    assert store.content_digest() == before


def test_second_writer_process_gets_clear_error(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "s.duckdb"
    s = Store(p)
    code = f"from autointerp.store import Store\nStore({str(p)!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    s.close()
    assert out.returncode != 0
    assert f"is being written by pid {os.getpid()}" in out.stderr and "one writer at a time" in out.stderr


def test_failed_background_insert_rolls_back(store):
    """Activation rows are appended on a background thread; its failure surfaces and nothing is kept."""
    import pyarrow as pa

    with store.transaction() as w:
        _tiny(w)
    before = store.content_digest()
    bad = pa.table({"x": ["not", "a", "row"]})  # wrong shape for the activations table
    with pytest.raises(StoreError, match="writing to .* failed"):
        with store.transaction() as w:
            _tiny(w, name="e")
            w.raw.insert_background("activations", bad)
            w.raw.con.execute("SELECT 1")  # the next statement waits for the insert, and raises its error
    assert store.content_digest() == before


def test_migration_4_makes_the_first_of_old_candidates_the_label(tmp_path):
    """A store from before best-of-k kept every candidate as a label: after the upgrade the first one is
    chosen and the others are kept as candidates."""
    from autointerp.store.schema import MIGRATIONS

    p = tmp_path / "old.duckdb"
    con = duckdb.connect(str(p))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMP NOT NULL)")
    for number, name, fn in MIGRATIONS[:3]:
        fn(con)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [number, name])
    for eid, feature, prompt in [(1, 0, "p"), (2, 0, "p"), (3, 0, "p"), (4, 0, "q"), (5, 1, "p")]:
        con.execute("INSERT INTO explanations VALUES (?, 1, ?, 'x', 'openai:m', ?, 'h', '{}', 0, '{}', now())",
                    [eid, feature, prompt])
    con.close()
    with Store(p) as s:
        chosen = s.query("SELECT explanation_id FROM explanations WHERE chosen ORDER BY 1").fetchall()
        assert s.schema_version() == LATEST_VERSION and [r[0] for r in chosen] == [1, 4, 5]


def test_a_read_only_command_migrates_a_store_from_an_earlier_autointerp_first(tmp_path):
    """A store from before migration 11 (no run ids): `labels`, `serve`, `trace`... open read-only, and a
    read-only DuckDB cannot migrate; the CLI migrates it once (a writer) and then reads it."""
    from typer.testing import CliRunner

    from autointerp.cli import app
    from autointerp.errors import OlderStoreError

    path = tmp_path / "old.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM schema_migrations WHERE version >= 11")
    con.execute("DROP TABLE captures")  # migration 12
    con.execute("DROP TABLE label_changes")  # migration 13
    con.execute("DROP TABLE calibration_runs")  # migration 14
    con.execute("DROP TABLE calibration_grades")
    con.execute("ALTER TABLE job_runs DROP COLUMN kind")  # migration 15
    con.execute("ALTER TABLE job_runs DROP COLUMN features_carried")
    con.execute("ALTER TABLE explanations DROP COLUMN run_id")
    con.execute("ALTER TABLE scores DROP COLUMN run_id")
    con.close()
    with pytest.raises(OlderStoreError, match="older than"):
        Store(path, read_only=True)
    r = CliRunner().invoke(app, ["dictionaries", "--store", str(path), "--json"])
    assert r.exit_code == 0, r.output
    with Store(path, read_only=True) as s:
        assert s.schema_version() == LATEST_VERSION


def test_a_commit_holds_the_turnstile_until_it_ends(tmp_path):
    """While a transaction is open, other processes' readers are held at the turnstile (with this process's
    watcher looking at it every few ms all along); once it ends, they pass."""
    import subprocess
    import sys
    import time

    p = tmp_path / "s.duckdb"
    probe = ("import fcntl, sys\nfh = open(sys.argv[1], 'a+')\n"
             "try:\n    fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)\n    print('free')\n"
             "except BlockingIOError:\n    print('held')\n")

    def turnstile() -> str:
        return subprocess.run([sys.executable, "-c", probe, f"{p}.turn.lock"], capture_output=True,
                              text=True).stdout.strip()

    with Store(p) as s:
        s.dictionaries()  # a read: the read-only instance is open, and its watcher runs
        with s.transaction():
            time.sleep(0.2)  # ten looks of the watcher
            assert turnstile() == "held"
        assert turnstile() == "free"


def test_histograms_put_each_firing_in_its_bin_and_each_feature_by_its_density(store, monkeypatch):
    """What the browser plots: feature 0 fires 2.0 and 0.5 (max 2.0), feature 2 fires 1.0, feature 1 never."""
    with store.transaction() as w:
        _tiny(w)
    d = store.dictionary()
    h = store.activations.activation_histograms(d.dictionary_id, [0, 1, 2], bins=4)
    assert set(h) == {0, 2}  # a dead feature has none
    import autointerp.store.activations as acts

    monkeypatch.setattr(acts, "HISTOGRAM_GAP", 1)  # 0 and 2 read as two runs of ids: the same counts
    assert store.activations.activation_histograms(d.dictionary_id, [2, 0], bins=4) == h
    assert h[0] == {"hi": 2.0, "counts": [0, 1, 0, 1]}  # 0.5 in [0.5, 1); the max in the last bin, not past it
    assert h[2] == {"hi": 1.0, "counts": [0, 0, 0, 1]}
    dens = store.activations.density_histogram(d.dictionary_id, bins=40)
    assert (dens["lo"], dens["hi"], dens["live"], dens["dead"]) == (-1.0, -0.5, 2, 1)  # half decades around 1/8, 2/8
    at = [i for i, n in enumerate(dens["counts"]) for _ in range(n)]
    assert at == [int((np.log10(1 / 8) + 1) / 0.5 * 40), int((np.log10(2 / 8) + 1) / 0.5 * 40)]
