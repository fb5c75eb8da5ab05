"""What the CLI says about a store adds up and says what is so: one row per feature in `labels` with the run
that wrote it, imported grades marked as imported, summary lines whose counts sum to the features selected,
every run (plain `label` runs too) in `job list`, a budget stop as a notice."""

import json
import re

from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.errors import EXIT, LabelError, UsageError
from autointerp.export.html import feature_docs
from autointerp.store import open_store

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _adds_up(line: str) -> int:
    """The features a summary line counts, checked against the sum of its outcomes (top-level: "29 skipped
    (14 dead, 15 too rare)" counts 29)."""
    m = re.search(r"([\d,]+) features of [^:]+: (.*?)(?: \||$)", line)
    assert m, line
    total = int(m.group(1).replace(",", ""))
    top = re.sub(r"\([^()]*\)", "", m.group(2))  # the kinds in parentheses are within their outcome's count
    parts = [int(n.replace(",", "")) for n in re.findall(r"(?:^|, )([\d,]+) [a-z]", top)]
    assert sum(parts) == total, line
    return total


def test_labels_one_row_per_feature_runs_listed_and_words_that_add_up(labelled_24):
    r = cli("label", "--store", labelled_24, "--features", "0-29", "--seed", "1", "--scorer", "simulation")
    assert r.exit_code == 0, r.output
    line = r.output.strip().splitlines()[-1]
    run_id = re.match(r"run (\w+): ", line).group(1)
    assert _adds_up(line) == 30 and "labelled (explained and graded)" in line and " 0 graded" not in line
    again = cli("label", "--store", labelled_24, "--features", "0-29", "--seed", "1", "--scorer", "simulation")
    assert again.exit_code == 0 and "30 already done" in again.output and _adds_up(again.output.strip()) == 30

    # one row per feature (its newest chosen label, the run that wrote it); --all-seeds shows both seeds
    rows = cli("labels", "--store", labelled_24).output.strip().splitlines()
    assert rows[0].split("\t")[-2:] == ["run", "explanation"]
    feats = [x.split("\t")[0] for x in rows[1:]]
    assert len(feats) == len(set(feats)) and {"0", "23"} <= set(feats)
    assert all(x.split("\t")[-2] == run_id for x in rows[1:] if int(x.split("\t")[0]) < 24)
    both = cli("labels", "--store", labelled_24, "--all-seeds").output.strip().splitlines()[1:]
    assert len(both) > len(rows) - 1 and len({x.split("\t")[-2] for x in both}) == 2
    with open_store(labelled_24, read_only=True) as s:
        d = s.dictionary()
        current = s.labels.find(d.dictionary_id, current=True)
        index = s.labels.feature_table(d.dictionary_id, [])
    by_index = dict(zip(index["feature"].to_pylist(), index["explanation_id"].to_pylist()))
    assert all(by_index[x["feature_id"]] == x["explanation_id"] for x in current)  # the browser's current label

    # every run, label runs too; an offline run's cost is "no calls"; a run that is not there is refused
    listed = json.loads(cli("job", "list", "--store", labelled_24, "--json").output)["runs"]
    mine = next(x for x in listed if x["run_id"] == run_id)
    assert mine["kind"] == "label" and mine["status"] == "done" and mine["features_done"] + mine[
        "features_skipped"] == 30
    text = cli("job", "list", "--store", labelled_24).output
    assert f"{run_id}\tlabel\tdone" in text
    c = cli("cost", "--store", labelled_24, "--run", run_id)
    assert c.exit_code == 0 and "made no LLM calls" in c.output
    assert cli("cost", "--store", labelled_24, "--run", "nosuchrun").exit_code == UsageError.exit_code

    shown = cli("show", "--store", labelled_24, "--feature", 3, "--windows", 0)
    assert shown.exit_code == 0 and "top windows" not in shown.output and f"run {run_id}" in shown.output
    assert cli("show", "--store", labelled_24, "--feature", 3, "--windows", -1).exit_code == UsageError.exit_code


def test_imported_grades_are_marked_and_ours_are_given_beside_them(labelled_24, twin, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert cli("export", "--store", labelled_24, "--out", out).exit_code == 0
    # no imported label: one line, the label exit code, nothing written
    r = cli("label", "--store", twin, "--explainer", "imported")
    assert r.exit_code == LabelError.exit_code and "no imported label" in r.output and len(r.output.strip().splitlines()) == 1
    assert cli("ingest", "labels", out, "--store", twin, "--format", "jsonl").exit_code == 0
    rows = cli("labels", "--store", twin).output.strip().splitlines()
    assert "(imported)" in rows[1] or "imported: no interval" in rows[1]

    # the imported simulation grades are the source's, not ours: all 24 get graded
    r = cli("label", "--store", twin, "--explainer", "imported", "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.output)
    assert (done["graded"], done["already_done"], done["without_import"], done["failed"]) == (24, 0, 256 - 24, 0)
    with open_store(twin, read_only=True) as s:
        d = s.dictionary()
        found = s.labels.find(d.dictionary_id, current=True)
        page = dict(feature_docs(s, d, [3]))[3]
    x = next(x for x in found if x["feature_id"] == 3)
    ours, theirs = x["scores"]["simulation"], x["imported_scores"]["simulation"]
    assert ours["imported"] is None and ours["run_id"] == done["run_id"]
    assert theirs["imported"].startswith("jsonl: ") and theirs["run_id"] != done["run_id"]
    assert x["scores"]["embedding"]["imported"].startswith("jsonl: ")  # not regraded: only what was asked
    label = page["labels"][0]
    assert label["scores"]["simulation"]["imported"] is None and label["imported_scores"]["simulation"]["imported"]
    shown = cli("show", "--store", twin, "--feature", 3).output
    assert "imported from jsonl: " in shown and f"run {done['run_id']}" in shown

    # a rerun has nothing to do; --force regrades every imported label and never fails
    again = json.loads(cli("label", "--store", twin, "--explainer", "imported", "--json").output)
    assert (again["graded"], again["already_done"], again["without_import"]) == (0, 24, 256 - 24)
    forced = cli("label", "--store", twin, "--explainer", "imported", "--force")
    assert forced.exit_code == 0, forced.output
    assert "24 graded" in forced.output and _adds_up(forced.output.strip().splitlines()[-1]) == 256
    failed = cli("labels", "--store", twin, "--status", "failed").output.strip().splitlines()
    assert failed == ["feature\texplainer\tseed\treason"]


def test_a_budget_stop_is_a_notice_and_demo_help_shows_its_extras(tmp_path, ingested_path):
    cfg = tmp_path / "job.toml"
    cfg.write_text('[job]\nfeatures = "0-29"\nscorers = ["simulation"]\n[budget]\nfeatures = 5\n')
    r = runner.invoke(app, ["job", "run", "--store", str(ingested_path), "--config", str(cfg)])
    assert r.exit_code == EXIT["budget"]
    assert "error" not in r.output and "stopped: job" in r.output
    assert "not started (budget" in r.output and _adds_up(r.output.split("; ", 1)[1].splitlines()[0]) == 30
    h = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "300"})
    assert ".[gemma]" in h.output
