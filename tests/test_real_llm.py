"""autointerp against a real model: llama.cpp's OpenAI-compatible server with Gemma 3 270M, through
`compat:` and the real OpenAI SDK (tests/llama_server.py starts it). A 270M base model is no labeller:
what these tests hold it to is that whatever it answers, every feature ends labelled or with a typed
failure naming the reason, every grade is a number or a reason, and the logprob paths read its real
tokenizer (Gemma writes "10" as "1", "0" and marks spaces with "▁"). Budgets are tiny: a few short
windows, so the suite stays within minutes on 2 cores."""

import json

from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.store import open_store

SMALL = ["--window", "8", "--n-top", "3", "--n-quantile", "0", "--n-score", "2", "--n-nonfiring", "2",
         "--n-neighbors", "0", "--min-evidence", "1"]


def _model(server):
    return ["--base-url", server.url]


def test_a_real_model_labels_or_fails_every_feature_with_a_reason(llama_server, ingested_path):
    r = CliRunner().invoke(app, ["label", "--store", str(ingested_path), "--features", "0-1", "--explainer",
                                 "compat:gemma", "--scorer", "detection", "--scorer-model", "compat:gemma",
                                 "--llm-windows", "2", *SMALL, *_model(llama_server), "--json"])
    assert r.exit_code in (0, 22), r.output
    out = json.loads(r.stdout)
    assert out["explained"] + out["failed"] == 2
    with open_store(ingested_path, read_only=True) as s:
        status = s.query("SELECT feature, status, reason FROM label_status ORDER BY feature").fetchall()
        rows = s.labels.find()
        calls = s.query("SELECT status, error, output_tokens FROM llm_calls").fetchall()
    assert [f for f, _, _ in status] == [0, 1]
    for f, st, reason in status:
        assert st == "ok" or (st == "failed" and reason.startswith("explainer: ") and len(reason) > 12), (f, reason)
    for row in rows:  # a label is the model's own words, with its provenance
        assert row["explainer"] == "compat:gemma" and row["explanation"].strip()
        g = row["scores"]["detection"]
        assert g["status"] in ("ok", "undefined", "failed")
        assert (g["value"] is not None) == (g["status"] == "ok") and (g["status"] == "ok" or g["reason"])
    # the server got the token limit it knows: no call ran past it, none timed out
    assert calls and all(st == "ok" for st, _, _ in calls), calls
    assert max(t for _, _, t in calls) <= 400


def test_json_simulation_on_a_real_model_reads_its_logprobs_or_says_why_not(llama_server, ingested_path):
    """Top logprobs over the real tokenizer: a single-token number becomes an expected value; "10" is two
    tokens on Gemma and keeps its written value. Whatever the reply, the grade is a number or a reason."""
    base = ["score", "--store", str(ingested_path), "--feature", "0", "--explanation", 'the token "the"',
            "--scorer", "simulation", "--scorer-model", "compat:gemma", "--llm-windows", "2", *SMALL,
            "--window", "3", *_model(llama_server), "--json"]  # short windows: the reply's token limit is sized by them
    out = json.loads(CliRunner().invoke(app, base).stdout)
    g = out["scores"]["simulation"]
    assert g["status"] in ("ok", "undefined", "failed"), g
    if g["status"] == "failed":  # a base model's JSON: typed, with the parser's reason
        assert g["reason"].startswith("reply: "), g
    else:
        d = g["details"]
        assert d["simulator"] == "json" and 0 <= d["from_logprobs"] <= 1 and d["n_windows"] == 2


def test_all_at_once_simulation_on_a_real_server(llama_server, ingested_path, tmp_path):
    """One echo + logprobs completion: every position read from Gemma's real tokens (the pieces
    llama-cpp-python decodes spell the prompt), predictions within the levels 0..9."""
    tiny = tmp_path / "tiny.toml"  # the packaged prompt's shape with a one-window few-shot: fewer tokens to echo
    tiny.write_text('name = "tiny"\nformat = "simulate_prompt"\nsystem = "Activations from 0 to 9."\n'
                    'user = "Description: {explanation}\\n{windows}"\n'
                    '[[fewshot]]\nanswer = "the word of"\n[[fewshot.windows]]\ntokens = ["a", " of", " b"]\n'
                    'activations = [0, 10, 0]\n')
    args = ["score", "--store", str(ingested_path), "--feature", "0", "--explanation", 'the token "the"',
            "--scorer", "simulation", "--scorer-model", "compat:gemma", "--simulator", str(tiny),
            "--llm-windows", "2", *SMALL, "--window", "6", *_model(llama_server), "--json"]
    r = CliRunner().invoke(app, args)
    g = json.loads(r.stdout)["scores"]["simulation"]
    assert g["status"] in ("ok", "undefined"), g
    d = g["details"]
    assert d["simulator"] == "prompt" and d["unread_unspelled"] == d["unread_joined"] == d["unread_no_digit"] == 0
    assert d["n_tokens"] == 12 and all(0 <= x <= 9 for p in d["predicted"] for x in p)
    assert len({x for p in d["predicted"] for x in p}) > 1  # a distribution per position, not one constant


def test_calibrating_a_real_model_grades_or_says_why_for_every_candidate(llama_server, ingested_path, tmp_path):
    """One planted rule (a token of the corpus), its truth and a sibling, graded by Gemma's JSON simulator on
    four held-out windows of 8 tokens: every grade is a number or a typed reason, and the run is stored."""
    with open_store(ingested_path, read_only=True) as s:
        (a, _), (b, _) = s.query("SELECT t, count(*) n FROM (SELECT unnest(tokens) t FROM contexts) "
                                 "WHERE t NOT LIKE '[%' GROUP BY t ORDER BY n DESC, t LIMIT 2").fetchall()
    rules = tmp_path / "one.toml"
    rules.write_text(f'[[rule]]\nname = "a-token"\nkind = "tokens"\nwords = [{json.dumps(a.strip())}]\n'
                     f'description = {json.dumps(f"the token {json.dumps(a.strip())}")}\n'
                     f'sibling = {json.dumps(f"the token {json.dumps(b.strip())}")}\n')
    r = CliRunner().invoke(app, ["calibrate", "--store", str(ingested_path), "--rules", str(rules), "--no-builtin",
                                 "--scorer", "simulation", "--scorer-model", "compat:gemma", "--no-logprobs",
                                 "--explainer", "none", "--seeds", "1", "--budgets", "4", "--unrelated", "0",
                                 *SMALL, *_model(llama_server), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["calibrated"] == 1 and doc["scorers"][0]["rules"] == 1
    with open_store(ingested_path, read_only=True) as s:
        grades = s.calibrations.grades(doc["run_id"])
        failed = s.query("SELECT count(*) FROM llm_calls WHERE status <> 'ok'").fetchone()[0]
    assert {g["candidate"] for g in grades} == {"truth", "sibling"} and failed == 0
    for g in grades:  # Gemma 270M writes what it writes: a number, or a typed reason
        assert g["status"] in ("ok", "undefined", "failed") and (g["value"] is not None) == (g["status"] == "ok")
        assert g["status"] == "ok" or g["reason"].split(":")[0] in ("reply", "provider", "no held-out windows") \
            or g["status"] == "undefined", g
    assert sum(doc["failed_grades"].values()) == sum(g["status"] == "failed" for g in grades)
