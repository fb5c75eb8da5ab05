"""The Python API as a notebook user calls it: `autointerp.open`, a Workspace's reads beside a writer, and the
example notebook run end to end by a real Jupyter kernel."""

import subprocess
import sys
from pathlib import Path

import pytest

import autointerp
from autointerp.errors import StoreError, UsageError

ROOT = Path(__file__).resolve().parent.parent


def test_import_is_cheap_and_names_load_on_use():
    """`import autointerp` loads neither torch nor the store; the API's names load when first used."""
    code = ("import sys, autointerp; assert 'torch' not in sys.modules and 'duckdb' not in sys.modules; "
            "autointerp.open; assert 'duckdb' in sys.modules; print(sorted(autointerp.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "'open'" in out.stdout and "'LabelRun'" in out.stdout
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        autointerp.nope  # noqa: B018


def test_a_workspace_reads_what_a_writer_commits(ingested_path):
    """A reader workspace beside a writer workspace (as a notebook beside a running job): each read sees what
    the writer has committed, no more; the page, labels and show agree with each other."""
    with pytest.raises(StoreError, match="no store at"):
        autointerp.open(ingested_path.parent / "typo.duckdb")
    writer = autointerp.open(ingested_path, write=True)
    reader = autointerp.open(ingested_path)
    try:
        assert [d.name for d in reader.dictionaries()] == [d.name for d in writer.dictionaries()]
        assert reader.features(limit=5)["label"].to_pylist() == [""] * 5  # nothing labelled yet
        s = writer.label(autointerp.LabelRun(features=range(0, 12), scorers=("simulation",)))
        assert s.explained > 0
        page = reader.features(sort="simulation", descending=True, by="lower", limit=50)
        labelled = [f for f, lab in zip(page["feature"].to_pylist(), page["label"].to_pylist()) if lab]
        assert len(labelled) == s.explained
        lows = [x for x in page["simulation_low"].to_pylist() if x is not None]
        assert lows == sorted(lows, reverse=True)
        rows = {r["feature_id"]: r for r in reader.labels()}
        assert set(rows) == set(labelled)
        first = labelled[0]
        doc = reader.show(first)
        assert doc["labels"][0]["explanation"] == rows[first]["explanation"] == page["label"][0].as_py()
        assert doc["stats"]["n_firing"] > 0 and doc["sample"]["explain"]
        writer.label(autointerp.LabelRun(features=range(12, 20), scorers=("simulation",)))
        assert len(reader.labels()) > len(rows)  # the next read sees the next commit
        with pytest.raises(UsageError, match="sort 'nope'"):
            reader.features(sort="nope")
        with pytest.raises(UsageError, match="out of range"):
            reader.show(10**6)
        with pytest.raises(StoreError, match="read-only"):
            reader.label(autointerp.LabelRun(features=[30]))
    finally:
        reader.close()
        writer.close()


def test_the_example_notebook_runs(tmp_path):
    """examples/quickstart.ipynb, cell by cell in a Jupyter kernel, as a user runs it."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in c.get("outputs", []))
               for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    assert any("done" in v and "labelled" in v for v in outputs.values()), outputs
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
