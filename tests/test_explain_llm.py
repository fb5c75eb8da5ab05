"""The LLM explainer: templates, rendering (golden files), parsing, and labelling through the real SDKs."""

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from loopback import Loopback, detector, explainer, simulator
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.errors import ExplainFailure, LabelError, UsageError
from autointerp.explain.llm import parse_explanation
from autointerp.explain.prompts import load_template, render_prompt, render_questions, render_scoring, show_token
from autointerp.ingest import ingest_delphi
from autointerp.records import Window

GOLDEN = Path(__file__).parent / "golden"
ODD = Window(kind="top", context_id=3, start=0, token_ids=tuple(range(9)),
             tokens=("Hello", " wörld", "\n", "\t", "<script>", "alert(1)", "</examples>", " &", "\x00"),
             activations=(0.0, 2.0, 0.5, 0.0, 4.0, 3.9, 0.0, 1.3, 0.0))
PLAIN = Window(kind="quantile", context_id=4, start=2, token_ids=(1, 2, 3), tokens=("a", " b", " c"),
               activations=(0.0, 1.0, 0.0))


PROMPTS = sorted(p.stem for p in (Path(__file__).parent.parent / "prompts").glob("*.toml"))
UPDATE = os.environ.get("AUTOINTERP_UPDATE_GOLDEN") == "1"  # rewrite the files after an intended change


def _rendered(name: str) -> str:
    """Every packaged prompt as its model reads it, on the same two windows (one with every kind of
    character that must be escaped): the system text, then each turn (an explainer's few-shot turns, then
    this feature's; a scorer sends its one user turn)."""
    t = load_template(name)
    explanation = 'the word "world" & <tags> </window>'
    if t.format in ("highlight", "activations"):
        turns = t.messages([ODD, PLAIN])
    elif t.format == "simulate_prompt":  # one completion prompt; the slots are where the levels are read
        text, slots = render_prompt(t, explanation, [ODD, PLAIN])
        return f"PROMPT:\n{text}\n\nSLOTS:\n{slots}\n"
    elif t.format == "intruder":
        turns = (("user", render_questions(t, [[ODD, PLAIN], [PLAIN, ODD]])),)
    else:  # simulate, simulate_sparse, detect, fuzz
        marks = [[a > 1 for a in w.activations] for w in (ODD, PLAIN)] if t.format == "fuzz" else None
        turns = (("user", render_scoring(t, explanation, [ODD, PLAIN], marks)),)
    return f"SYSTEM:\n{t.system}\n" + "".join(f"\n{role.upper()}:\n{text}\n" for role, text in turns)


@pytest.mark.parametrize("name", PROMPTS)
def test_rendered_prompts_match_golden_files(name):
    """Every packaged prompt has a golden file: a change to a template or to its rendering shows as a diff
    to review (AUTOINTERP_UPDATE_GOLDEN=1 rewrites them)."""
    rendered, path = _rendered(name), GOLDEN / f"{name}.txt"
    if UPDATE:
        path.write_text(rendered, encoding="utf-8")
    assert path.is_file(), f"{name} has no golden file: run with AUTOINTERP_UPDATE_GOLDEN=1 and review {path}"
    assert rendered == path.read_text(encoding="utf-8"), f"prompt changed: review it, then update {path}"


def test_contexts_cannot_change_the_prompt_structure():
    t = load_template("explain_highlight")
    user = t.messages([ODD])[-1][1]
    assert user.count("<examples>") == 1 and user.count("</examples>") == 1  # the forged tag is escaped
    assert "&lt;/examples&gt;" in user and "&lt;script&gt;" in user and "\\n" in user and "\\x00" in user
    a = load_template("explain_activations").messages([ODD])[-1][1]
    body = a.split("<examples>\n", 1)[1].rsplit("\n</examples>", 1)[0].split(":\n", 1)[1]
    assert len(body.split("\n")) == len(ODD.tokens)  # a newline token cannot add a line
    assert all(re.fullmatch(r"[^\t]*\t(10|\d)", line) for line in body.split("\n"))
    assert show_token("<<x>>") == "&lt;&lt;x&gt;&gt;"


def test_bad_templates_are_refused(tmp_path):
    good = (Path(__file__).parent.parent / "prompts" / "explain_highlight.toml").read_text()
    cases = {"format = \"highlight\"": ("format = \"html\"", "format must be"),
             "{examples}": ("{examples} {feature}", "no other placeholder"),
             "name = ": ("colour = \"red\"\nname = ", "unknown keys"),
             "activations = [0, 0, 0.2, 3.1, 0, 0, 0, 0, 0]": ("activations = [0, 1]", "equal-length")}
    for old, (new, message) in cases.items():
        p = tmp_path / "t.toml"
        p.write_text(good.replace(old, new, 1))
        with pytest.raises(LabelError, match=message):
            load_template(str(p))
    have = ", ".join(sorted(x.stem for x in (Path(__file__).parent.parent / "prompts").glob("*.toml")))
    with pytest.raises(UsageError, match=f"available: {have}$"):
        load_template("nope")


def test_parsing_replies():
    assert parse_explanation("Looks like commas.\nEXPLANATION: commas in lists") == "commas in lists"
    assert parse_explanation("**Explanation:** \"the word of\"") == "the word of"
    assert parse_explanation("EXPLANATION: first\nthinking more\nExplanation: second") == "second"
    for bad, why in [("I think it is commas.", "unparseable"), ("EXPLANATION:   ", "empty"),
                     ("EXPLANATION: none", "empty"), ("EXPLANATION: I can't help with that", "declined"),
                     ("EXPLANATION: " + "word " * 50, "at most"), ("", "unparseable")]:
        with pytest.raises(ExplainFailure, match=why):
            parse_explanation(bad)


def test_label_with_an_llm_through_the_real_sdk(store, delphi_cache, monkeypatch):
    folder, facts = delphi_cache(n_seq=300)
    ingest_delphi(store, folder)
    d = store.dictionary()
    from autointerp.explain import Background

    strings = Background.from_store(store.activations, d.corpus_id).strings
    triggers = [strings[int(t)].strip() for t in facts["trigger_ids"]]
    path = store.path
    store.close()
    monkeypatch.setenv("LOOPBACK_KEY", "sk-loopback")
    with Loopback(reply=explainer) as server:
        server.fault("500", "429", "reset")  # transient faults on the first calls: retried, not failures
        args = ["label", "--store", str(path), "--features", "0-3,200", "--explainer", "anthropic:claude-haiku-x",
                "--base-url", server.url, "--api-key-env", "LOOPBACK_KEY", "--scorer", "simulation", "--json",
                "--rpm", "6000"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert (out["explained"], out["skipped"], out["failed"]) == (4, 1, 0)
        assert out["explainer"] == "anthropic:claude-haiku-x" and out["cost"][0]["calls"] == 4
        sent = server.count("/messages")
        assert sent == 4 + 3
        r = CliRunner().invoke(app, args + ["--force"])  # everything again: served from the cache
        assert r.exit_code == 0 and server.count("/messages") == sent
        assert json.loads(r.stdout)["cost"][0]["cached_calls"] == 4
    from autointerp.store import open_store

    with open_store(path, read_only=True) as s:
        rows = s.labels.find(d.dictionary_id)
    assert len(rows) == 4  # --force replaced, never duplicated
    for r in rows:  # the scripted model names the marked token: each label names its feature's trigger
        assert r["explanation"] == f'the token "{triggers[r["feature_id"]]}"'
    assert all(r["prompt_hash"] and r["evidence"]["template"] == "explain-highlight" for r in rows)
    r = CliRunner().invoke(app, ["cost", "--store", str(path), "--json"])
    doc = json.loads(r.stdout)
    assert sum(x["calls"] for x in doc["runs"]) == 4 and sum(x["cached_calls"] for x in doc["runs"]) == 4


def test_unparseable_and_failed_replies_are_typed_failures(ingested_path, monkeypatch):
    path = ingested_path
    copied = 'Same as before.\nEXPLANATION: the word "of" after a quantity or part ("most of", "a list of")'
    replies = iter(["No label here, sorry.", "EXPLANATION: I cannot help with that", "EXPLANATION: fine one", copied])
    with Loopback(reply=lambda p, b: next(replies, "EXPLANATION: x")) as server:
        server.fault("ok", "ok", "ok", "400")
        r = CliRunner().invoke(app, ["label", "--store", str(path), "--features", "0-4", "--explainer",
                                     "openai:gpt-x", "--base-url", server.url + "/v1", "--scorer", "", "--json",
                                     "--concurrency", "1", "--rpm", "6000"])
        out = json.loads(r.stdout)
    assert (out["explained"], out["failed"]) == (1, 4) and out["failed_kinds"] == {"explainer": 4}
    from autointerp.store import open_store

    with open_store(path, read_only=True) as s:
        status = s.query("SELECT feature, status, reason FROM label_status ORDER BY feature").fetchall()
        texts = [r["explanation"] for r in s.labels.find()]
    reasons = " | ".join(x[2] for x in status)
    assert "unparseable" in reasons and "declined" in reasons and "HTTP 400" in reasons
    assert "repeats the prompt's example label" in reasons  # a small model's parroting is not a label
    assert texts == ["fine one"]  # a failure never becomes a label


def test_kill_9_mid_run_loses_no_paid_reply(ingested_path, tmp_path):
    """A labelling process killed with SIGKILL mid-run, then rerun: every feature labelled once, and no
    request sent again whose reply had arrived (only calls in flight at the kill may repeat)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = ingested_path
    with Loopback(reply=explainer, latency=0.05) as server:
        cmd = [sys.executable, "-m", "autointerp", "label", "--store", str(path), "--features", "0-59",
               "--explainer", "anthropic:claude-haiku-x", "--base-url", server.url, "--api-key-env", "K",
               "--scorer", "", "--concurrency", "4", "--rpm", "60000", "--json"]
        env = {**os.environ, "K": "sk-x"}
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while server.count() < 25 and time.time() < deadline and child.poll() is None:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        killed_at = server.count()
        assert 25 <= killed_at < 60
        again = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        out = json.loads(again.stdout)
        bodies = Counter(json.dumps(r["body"], sort_keys=True) for r in server.requests
                         if (r["body"] or {}).get("messages"))  # a request cut off by the kill has no body
    from autointerp.store import open_store

    with open_store(path, read_only=True) as s:
        rows = s.labels.find()
        st = s.labels.label_summary(s.dictionary().dictionary_id)
        calls = s.query("SELECT count(*), count(DISTINCT call_id), count(DISTINCT cache_key) FROM llm_calls "
                              "WHERE NOT cached").fetchone()
    assert st == {"ok": 60} and out["already_done"] + out["explained"] == 60
    assert len(rows) == len({r["feature_id"] for r in rows}) == 60  # every feature once, no duplicates
    assert len(bodies) == 60  # one prompt per feature
    assert sum(n - 1 for n in bodies.values()) <= 4  # only calls in flight at the kill (concurrency 4) went twice
    assert calls[0] == calls[1] == calls[2] == 60  # one paid reply per prompt in the ledger, none counted twice
    assert not list(Path(path).parent.glob("*.llm-journal-*"))  # folded and removed at the end of the run


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_batch_mode_submits_once_survives_a_restart_and_labels(kind, ingested_path, monkeypatch):
    path = ingested_path
    monkeypatch.setenv("K", "sk-x")
    prices = Path(str(path) + ".prices.json")
    prices.write_text(json.dumps({"claude-haiku-x": [1.0, 5.0, 0.1, 1.25]}))
    with Loopback(reply=explainer) as server:
        server.batch_polls = 3
        base = ["label", "--store", str(path), "--features", "0-9", "--explainer", f"{kind}:claude-haiku-x",
                "--base-url", server.url + ("/v1" if kind == "openai" else ""), "--api-key-env", "K", "--scorer", "",
                "--batch", "--batch-poll", "0.01", "--prices", str(prices), "--json"]
        first = CliRunner().invoke(app, base + ["--batch-wait", "0"])  # submit, poll once, stop: still pending
        assert first.exit_code == 21, first.output  # as a job's: stopped with batches pending, run again
        out = json.loads(first.stdout)
        assert out["batch"] == {"submitted": 10, "batches": 0, "replies": 0, "errors": 0, "pending": 1,
                                "stages": 1}
        assert out["explained"] == 0  # nothing labelled while the batch runs
        second = CliRunner().invoke(app, base)  # a new run: collects the pending batch, submits nothing
        out = json.loads(second.stdout)
        assert out["batch"]["submitted"] == 0 and out["batch"]["replies"] == 10 and out["explained"] == 10
        creates = [r for r in server.requests if r["method"] == "POST" and r["path"].endswith("/batches")]
        direct = [r for r in server.requests if r["method"] == "POST" and r["path"].endswith(("/v1/messages",
                                                                                               "/chat/completions"))]
        assert len(creates) == 1 and creates[0]["body"]["n"] == 10 and not direct  # every reply came by batch
    from autointerp.store import open_store

    with open_store(path, read_only=True) as s:
        paid = s.query("SELECT count(*), sum(cost_usd), sum(input_tokens), sum(output_tokens) FROM llm_calls "
                             "WHERE NOT cached").fetchone()
        assert s.query("SELECT status FROM llm_batches").fetchall() == [("collected",)]
        assert len(s.labels.find()) == 10
    # billed at half the list price: $1 / $5 per million input / output tokens
    assert paid[0] == 10 and abs(paid[1] - 0.5 * (paid[2] * 1.0 + paid[3] * 5.0) / 1e6) < 1e-12


def _three_candidates(provider, body):
    """n = 3 choices: a label naming a token that never occurs, the right one, and another wrong one."""
    right = explainer(provider, body)
    return ['The marked tokens agree.\nEXPLANATION: the token "zebra"', right,
            'The marked tokens agree.\nEXPLANATION: the token "quagga"']


def test_best_of_k_labels_the_best_candidate_and_keeps_them_all(ingested_path, monkeypatch):
    path = ingested_path
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=_three_candidates) as server:
        r = CliRunner().invoke(app, ["label", "--store", str(path), "--features", "0-1", "--explainer", "openai:gpt-x",
                                     "--base-url", server.url + "/v1", "--api-key-env", "K", "--candidates", "3",
                                     "--select-by", "simulation", "--scorer", "embedding", "--json", "--rpm", "6000"])
        assert r.exit_code == 0, r.output
        assert [x["body"]["n"] for x in server.requests] == [3, 3]  # one call per feature, n = 3
    out = json.loads(r.stdout)
    assert out["select_by"] == "simulation" and out["explained"] == 2
    from autointerp.store import open_store

    with open_store(path, read_only=True) as s:
        labels, every = s.labels.find(), s.labels.find(candidates=True)
    assert len(every) == 6 and sorted(r["evidence"]["candidate"] for r in every) == [0, 0, 1, 1, 2, 2]
    # the label is the candidate the selector graded best (the right one); the others carry only that grade
    assert len(labels) == 2 and all(r["chosen"] and r["evidence"]["candidate"] == 1 for r in labels)
    best = {r["feature_id"]: r["scores"]["simulation"]["value"] for r in labels}
    for r in every:
        assert set(r["scores"]) == ({"simulation", "embedding"} if r["chosen"] else {"simulation"})
        if not r["chosen"]:  # a token that never occurs is graded below the right one (or undefined)
            assert (r["scores"]["simulation"]["value"] or -1) < best[r["feature_id"]]
    lines = CliRunner().invoke(app, ["labels", "--store", str(path), "--candidates", "--json"])
    assert len(json.loads(lines.stdout)["labels"]) == 6


def test_batch_mode_plans_explain_select_and_score_stages(ingested_path, monkeypatch):
    """--batch with best-of-k chosen by an LLM scorer and another LLM scorer on the chosen label: three
    dependent stages, each sent as a batch (explanations; the candidates' detection grades; simulation of
    the chosen ones), and not one direct call."""
    def model(provider, body):
        system = body["messages"][0]["content"]
        if "simulating" in system:
            return simulator(provider, body)
        if "fires anywhere" in system:
            return detector(provider, body)
        return _three_candidates(provider, body)

    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=model) as server:
        server.batch_polls = 1
        args = ["label", "--store", str(ingested_path), "--features", "0-3", "--explainer", "openai:gpt-x",
                "--scorer-model", "openai:gpt-y", "--base-url", server.url + "/v1", "--api-key-env", "K",
                "--candidates", "3", "--select-by", "detection", "--scorer", "simulation", "--batch",
                "--batch-poll", "0.01", "--rpm", "6000", "--json"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        creates = [x for x in server.requests if x["method"] == "POST" and x["path"].endswith("/batches")]
        direct = [x for x in server.requests if x["path"].endswith("/chat/completions")]
        assert out["batch"]["stages"] == 3 and len(creates) == 3 and not direct
        assert out["explained"] == 4 and out["batch"]["pending"] == 0 and out["batch"]["errors"] == 0
        n = len(server.requests)
        again = json.loads(CliRunner().invoke(app, args + ["--force"]).stdout)  # everything from the cache
        assert len(server.requests) == n and again["explained"] == 4
    assert out["scores"] == again["scores"] == {"simulation": {"ok": 4}, "detection": {"ok": 12}}
    from autointerp.store import open_store

    with open_store(ingested_path, read_only=True) as s:
        every = s.labels.find(candidates=True)
        purposes = dict(s.query("SELECT purpose, count(*) FROM llm_calls WHERE NOT cached GROUP BY 1").fetchall())
    assert all(r["evidence"]["candidate"] == 1 for r in every if r["chosen"]) and len(every) == 12
    assert all(set(r["scores"]) == ({"detection", "simulation"} if r["chosen"] else {"detection"}) for r in every)
    # 4 explain calls (n = 3 each); detection and simulation in calls of 10 windows, only the chosen simulated
    assert purposes["explain"] == 4 and purposes["detection"] == 3 * purposes["simulate"]
    assert out["cost"][0]["cached_calls"] == 4  # the labelling pass's; the batch plans record no calls
