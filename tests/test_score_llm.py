"""The simulator on an LLM, through the real SDKs against the loopback server."""

import json
import re

import pytest
from loopback import ErrorReply, Loopback, _turn, detector, fuzz_judge, simulator
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.llm import ReplyFailure as SimulationFailure
from autointerp.simulate import parse_simulation


def test_parse_simulation_checks_every_window_and_token():
    ok = '{"windows": [{"id": 1, "activations": [0, 10, 2.5]}, {"id": 2, "activations": [0]}]}'
    assert parse_simulation("Here you go:\n" + ok, [3, 1]) == [[0, 10, 2.5], [0]]
    bad = {"prose only": ("I think token 2 fires.", "no JSON"),
           "wrong length": ('{"windows": [{"id": 1, "activations": [0, 1]}, {"id": 2, "activations": [0]}]}',
                            "2 values for 3 tokens"),
           "missing": ('{"windows": [{"id": 1, "activations": [0, 1, 2]}]}', "window 2 missing"),
           "range": ('{"windows": [{"id": 1, "activations": [0, 11, 2]}, {"id": 2, "activations": [0]}]}', "0 to 10"),
           "negative": ('{"windows": [{"id": 1, "activations": [0, -1, 2]}, {"id": 2, "activations": [0]}]}',
                        "0 to 10"),
           "text values": ('{"windows": [{"id": 1, "activations": ["0", 1, 2]}, {"id": 2, "activations": [0]}]}',
                           "0 to 10"),
           "twice": ('{"windows": [{"id": 1, "activations": [0, 1, 2]}, {"id": 1, "activations": [0, 1, 2]}]}',
                     "twice"),
           "extra": ('{"windows": [{"id": 1, "activations": [0, 1, 2]}, {"id": 2, "activations": [0]}, '
                     '{"id": 3, "activations": [0]}]}', "not asked for"),
           "shape": ('{"activations": [0, 1, 2]}', "no 'windows' list"),
           "broken": ('{"windows": [{"id": 1, "activations": [0, 1', "no JSON")}
    for why, (reply, message) in bad.items():
        with pytest.raises(SimulationFailure, match=message):
            parse_simulation(reply, [3, 1])


def _short_by_one(provider, body):
    doc = json.loads(simulator(provider, body))
    doc["windows"][0]["activations"].pop()
    return json.dumps(doc)


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_llm_simulation_scores_labels_through_the_pipeline(kind, ingested_path, monkeypatch):
    path = ingested_path
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=simulator) as server:
        url = server.url + ("/v1" if kind == "openai" else "")
        r = CliRunner().invoke(app, ["label", "--store", str(path), "--features", "0-3", "--scorer", "simulation",
                                     "--scorer-model", f"{kind}:sim-model", "--base-url", url, "--api-key-env", "K",
                                     "--rpm", "60000", "--json"])
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["scores"] == {"simulation": {"ok": 4}} and out["cost"][0]["purpose"] == "simulate"
        c = out["cost"][0]
        # a human's label and a wrong one, graded by the same simulator on feature 0's held-out windows
        from autointerp.store import open_store

        with open_store(path, read_only=True) as s:
            rows = s.labels.find()
        own = rows[0]
        # the held-out windows go in calls of 20 (ScoringOptions.windows_per_call): one call a group, each sent once
        groups = sum(-(-len(r["scores"]["simulation"]["details"]["per_window_correlation"]) // 20) for r in rows)
        assert c["calls"] + c["cached_calls"] == groups and server.count() == c["calls"]
        args = ["score", "--store", str(path), "--feature", "0", "--scorer", "simulation", "--scorer-model",
                f"{kind}:sim-model", "--base-url", url, "--api-key-env", "K", "--json"]
        right = json.loads(CliRunner().invoke(app, args + ["--explanation", own["explanation"]]).stdout)
        wrong = json.loads(CliRunner().invoke(app, args + ["--explanation", 'the token "zebra"']).stdout)
    sim = own["scores"]["simulation"]
    assert sim["value"] > 0.5 and sim["version"].startswith(f"{'compat' if kind == 'openai' else kind}:sim-model/")
    assert len(sim["details"]["per_window_correlation"]) == 40 and "r_squared" in sim["details"]  # --llm-windows 40
    assert right["scores"]["simulation"]["value"] == sim["value"]  # same windows, same replies (from the cache)
    assert wrong["scores"]["simulation"]["status"] == "undefined"  # predicts all zeros: no correlation defined


def test_a_misaligned_reply_is_a_typed_failure_never_zeros(ingested_path, monkeypatch):
    path = ingested_path
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=_short_by_one) as server:
        r = CliRunner().invoke(app, ["label", "--store", str(path), "--features", "0", "--scorer", "simulation",
                                     "--scorer-model", "anthropic:sim-model", "--base-url", server.url,
                                     "--api-key-env", "K", "--rpm", "60000", "--json"])
        out = json.loads(r.stdout)
    assert out["explained"] == 1 and out["scores"] == {"simulation": {"failed": 1}}
    assert out["score_failures"] == {"simulation": {"reply": 1}}
    from autointerp.store import open_store

    with open_store(path, read_only=True) as s:
        sc = s.labels.find()[0]["scores"]["simulation"]
    assert sc["value"] is None and "values for" in sc["reason"] and sc["reason"].startswith("reply:")


def test_parse_detection_checks_every_window():
    from autointerp.score.llm import parse_detection

    assert parse_detection('{"fires": [2]}', 3) == [0, 1, 0]
    assert parse_detection('Here: {"fires": []}', 2) == [0, 0]
    for reply, message in [('{"fires": [3]}', "windows are 1..2"),
                           ('{"fires": [1, 1]}', "twice"),
                           ('{"fires": ["1"]}', "window ids"),
                           ('{"answers": [{"id": 1, "fires": 1}]}', "no 'fires' list"),
                           ("Window 1 fires.", "no JSON")]:
        with pytest.raises(SimulationFailure, match=message):
            parse_detection(reply, 2)


def _label_and_score_wrong(path, server, scorer):
    """Label features 0-3 offline and grade them with `scorer` on the loopback model; then grade a wrong
    label of feature 0. Returns (label summary, stored labels, the wrong label's score document)."""
    from autointerp.store import open_store

    base = ["--store", str(path), "--scorer", scorer, "--scorer-model", f"anthropic:{scorer}-model",
            "--base-url", server.url, "--api-key-env", "K"]
    r = CliRunner().invoke(app, ["label", "--features", "0-3", "--rpm", "60000", "--json", *base])
    assert r.exit_code == 0, r.output
    with open_store(path, read_only=True) as s:
        rows = s.labels.find()
    wrong = CliRunner().invoke(app, ["score", "--feature", "0", "--explanation", 'the token "zebra"', "--json", *base])
    return json.loads(r.stdout), rows, json.loads(wrong.stdout)


def test_detection_separates_own_labels_from_wrong_ones(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=detector) as server:
        out, rows, wrong = _label_and_score_wrong(ingested_path, server, "detection")
    assert out["scores"] == {"detection": {"ok": 4}}
    for r in rows:
        d = r["scores"]["detection"]
        # 40 of the held-out windows (--llm-windows), the classes in their shares
        det = d["details"]
        assert det["n_positive"] + det["n_negative"] == 40 and min(det["n_positive"], det["n_negative"]) >= 15
        assert det["precision"] == 1.0
        # the scripted detector matches whole words: a word-piece trigger ("s" of "-s") is missed, as it should be
        if len(re.findall(r'"([^"]+)"', r["explanation"])[0]) > 1:
            assert d["value"] > 0.9 and d["details"]["recall"] > 0.8, (r["explanation"], d)
    assert wrong["scores"]["detection"]["value"] == 0.5  # says "no" to everything: chance
    r = CliRunner().invoke(app, ["score", "--store", str(ingested_path), "--feature", "0", "--explanation", "x",
                                 "--scorer", "detection"])
    assert r.exit_code == 2 and "needs an LLM" in r.output


def test_fuzzing_tells_true_marks_from_fuzzed_ones(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=fuzz_judge) as server:
        out, rows, wrong = _label_and_score_wrong(ingested_path, server, "fuzzing")
        marked = [x["body"]["messages"][-1]["content"] for x in server.requests]
    assert out["scores"] == {"fuzzing": {"ok": 4}}
    assert all(m.count("<<") >= 1 for m in marked)  # every window shows marks, true or fuzzed
    for r in rows:
        d = r["scores"]["fuzzing"]
        assert d["details"]["n_positive"] >= d["details"]["n_negative"] > 10
        assert d["value"] > 0.9, (r["explanation"], d)  # true marks sit on the trigger, fuzzed ones never do
    assert wrong["scores"]["fuzzing"]["value"] == 0.5


def test_expected_values_read_the_digits_alternatives():
    import math

    from autointerp.simulate.llm import expected_values

    reply = '{"windows": [{"id": 1, "activations": [0, 10, 2.5]}]}'
    lg = math.log
    tokens = [('{"', ()), ("windows", ()), ('":', ()), (" [{", ()), ('"id', ()), ('":', ()), (" ", ()), ("1", ()),
              (",", ()), (' "', ()), ("activations", ()), ('":', ()), (" [", ()),
              ("0", (("0", lg(0.5)), ("4", lg(0.25)), ("x", lg(0.25)))),  # digits hold 0.75: 0.25*4 / 0.75
              (",", ()), (" 10", ((" 10", lg(0.8)), (" 9", lg(0.2)))),  # a number token with its space
              (",", ()), (" ", ()), ("2", ()), (".", ()), ("5", ()),  # not one token: the written value
              ("]}", ()), ("]}", ())]
    tokens = [(t, alts or ((t, 0.0),)) for t, alts in tokens]
    why = {}
    [(values, n)] = expected_values(reply, tokens, [[0, 10, 2.5]], why)
    assert values == pytest.approx([4 / 3, 9.8, 2.5]) and n == 2 and why == {"split": 1}  # 2.5: why it is as written
    why = {}
    assert expected_values(reply, tokens[:-1], [[0, 10, 2.5]], why) == [([0, 10, 2.5], 0)]  # no alignment: as written
    assert why == {"unspelled": 3}
    # Gemma's pieces: spaces as "▁", and "10" as "1", "0": the 10 keeps its written value, and says why
    gemma = [(t, alts or ((t, 0.0),)) for t, alts in [
        ('{"', ()), ("windows", ()), ('":', ()), ("\u2581[{", ()), ('"id', ()), ('":', ()), ("\u2581", ()), ("1", ()),
        (",", ()), ('\u2581"', ()), ("activations", ()), ('":', ()), ("\u2581[", ()),
        ("0", (("0", lg(0.5)), ("4", lg(0.25)), ("x", lg(0.25)))), (",", ()), ("\u2581", ()), ("1", ()), ("0", ()),
        (",", ()), ("\u2581", ()), ("2", ()), (".", ()), ("5", ()), ("]}", ()), ("]}", ())]]
    why = {}
    [(values, n)] = expected_values(reply, gemma, [[0, 10, 2.5]], why)
    assert values == pytest.approx([4 / 3, 10, 2.5]) and n == 1 and why == {"split": 2}
    with pytest.raises(SimulationFailure, match="numbers found"):
        expected_values(reply, tokens, [[0, 10, 2.5, 1]])


def _unsure_simulator(provider, body):
    """Writes 0 for every token, but at tokens the description quotes it was torn: p(0) = 0.6, p(8) = 0.4.
    The reply is returned token by token with those alternatives (as top_logprobs report them)."""
    import math

    named, wins = _turn(body)
    toks = [('{"windows": [', ())]
    for k, (i, w) in enumerate(wins):
        toks += [(", " if k else "", ()), ('{"id": ', ()), (i, ()), (', "activations": [', ())]
        for j, ln in enumerate(w.splitlines()):
            unsure = ln.split("\t", 1)[1].strip() in named
            toks += [(", " if j else "", ()), ("0", (("0", math.log(0.6)), ("8", math.log(0.4))) if unsure else ())]
        toks.append(("]}", ()))
    toks.append(("]}", ()))
    toks = [(t, alts or ((t, 0.0),)) for t, alts in toks if t]
    return "".join(t for t, _ in toks), toks


def test_logprob_simulation_scores_the_expected_value(ingested_path, monkeypatch):
    """On a chat API with top_logprobs, the prediction is the expected value over "0".."10": a simulator
    that writes 0 everywhere but leans towards 8 on the right tokens is graded on that lean. Without
    logprobs the same replies predict all zeros: undefined. The logprobs survive the response cache."""
    from autointerp.store import open_store

    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=_unsure_simulator) as server:
        base = ["--store", str(ingested_path), "--scorer", "simulation", "--scorer-model", "compat:sim",
                "--base-url", server.url + "/v1", "--api-key-env", "K", "--json"]
        r = CliRunner().invoke(app, ["label", "--features", "0-3", "--rpm", "60000", *base])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["scores"] == {"simulation": {"ok": 4}}
        sent = [x["body"] for x in server.requests]
        assert sent and all(b["logprobs"] is True and b["top_logprobs"] == 10 for b in sent)
        with open_store(ingested_path, read_only=True) as s:
            rows = s.labels.find()
        sim = rows[0]["scores"]["simulation"]
        assert sim["details"]["from_logprobs"] == 1.0 and sim["value"] > 0.5
        assert {x for p in sim["details"]["predicted"] for x in p} == {0.0, 3.2}  # 0.4 * 8
        n = len(server.requests)
        again = json.loads(CliRunner().invoke(app, ["score", "--feature", "0", "--explanation", rows[0]["explanation"],
                                                    *base]).stdout)
        assert len(server.requests) == n  # every reply, logprobs included, came from the cache
        assert again["scores"]["simulation"]["value"] == sim["value"]
        plain = json.loads(CliRunner().invoke(app, ["score", "--feature", "0", "--explanation", rows[0]["explanation"],
                                                    "--no-logprobs", *base]).stdout)
        assert all("logprobs" not in x["body"] for x in server.requests[n:]) and len(server.requests) > n
    assert plain["scores"]["simulation"]["status"] == "undefined"  # the written zeros alone say nothing


def _label_with_prompt_simulator(path, url, *extra):
    return CliRunner().invoke(app, ["label", "--store", str(path), "--features", "0-3", "--scorer", "simulation",
                                    "--scorer-model", "compat:reader", "--base-url", url, "--simulator",
                                    "simulate_prompt", "--rpm", "60000", "--json", *extra])


@pytest.mark.parametrize("tokenizer", [{}, {"split_digits": True}, {"spaces": "\u2581", "bos": True}])
def test_all_at_once_simulation_reads_the_prompts_logprobs(tokenizer, ingested_path):
    """simulate_prompt: one echo + logprobs completion per group of windows, nothing generated but one
    token; the prediction is the expected value over the levels 0..9 where "unknown" stands, the same on
    a tokenizer that splits digits; raw "▁" pieces and an echoed "<bos>" still spell the prompt."""
    from loopback import prompt_reader

    from autointerp.store import open_store

    with Loopback(reply=lambda p, b: prompt_reader(p, b, **tokenizer)) as server:
        r = _label_with_prompt_simulator(ingested_path, server.url + "/v1")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["scores"] == {"simulation": {"ok": 4}}
        sent = [x for x in server.requests if x["path"].endswith("/v1/completions")]
        assert sent and all(x["body"]["echo"] is True and x["body"]["logprobs"] == 20 and x["body"]["max_tokens"] == 1
                            for x in sent)
        with open_store(ingested_path, read_only=True) as s:
            sim = s.labels.find()[0]["scores"]["simulation"]
        d = sim["details"]
        assert d["simulator"] == "prompt" and sim["value"] > 0.5
        assert d["unread_unspelled"] == d["unread_joined"] == d["unread_no_digit"] == 0
        hot, cold = 0.6 * 9 / 0.7, 0.1 * 2 / 0.7  # the scripted mass: 0.6 on the top digit, 0.1 on another
        assert {x for p in d["predicted"] for x in p} == {round(hot, 3), round(cold, 3)}
        n = len(server.requests)
        assert _label_with_prompt_simulator(ingested_path, server.url + "/v1", "--force").exit_code == 0
        assert len(server.requests) == n  # the echoes came from the cache


@pytest.mark.parametrize("server_kind, reason", [
    ("no_logprobs", r"^provider: the server returned no prompt logprobs .* --logits_all True"),
    ("logits_all_500", r"^provider: the server returned no prompt logprobs .* --logits_all True"),
    ("ignores_echo", r"^provider: the server ignored echo: .* llama-server does not echo"),
    ("join_tab", r"^reply: (\d+) of \1 positions could not be read: \1 no token starts at the slot"),
    ("wrong_text", r"^reply: .* do not spell the prompt"),
])
def test_all_at_once_simulation_that_cannot_read_the_prompt_is_a_typed_failure(server_kind, reason, ingested_path):
    from loopback import prompt_reader

    from autointerp.store import open_store

    def reply(p, b):
        if server_kind == "no_logprobs":
            return None
        if server_kind == "logits_all_500":  # what llama-cpp-python's server answers without logits_all
            return ErrorReply(500, "logprobs is not supported for models created with logits_all=False")
        if server_kind == "ignores_echo":  # llama.cpp's llama-server: the generated token's logprobs only
            return [("\n", {"\n": -0.1})]
        if server_kind == "join_tab":
            return prompt_reader(p, b, join_tab=True)
        toks = prompt_reader(p, b)
        return [("X" + toks[0][0], toks[0][1])] + toks[1:]

    with Loopback(reply=reply) as server:
        r = CliRunner().invoke(app, ["label", "--store", str(ingested_path), "--features", "0", "--scorer",
                                     "simulation", "--scorer-model", "compat:reader", "--base-url",
                                     server.url + "/v1", "--simulator", "simulate_prompt", "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 22 and out["scores"] == {"simulation": {"failed": 1}}
    with open_store(ingested_path, read_only=True) as s:
        sc = s.labels.find()[0]["scores"]["simulation"]
    assert sc["value"] is None and re.search(reason, sc["reason"]), sc["reason"]


def test_all_at_once_simulation_needs_a_server_that_echoes(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    for model, url in (("anthropic:claude-x", "http://127.0.0.1:9"), ("openai:gpt-x", None)):
        args = ["label", "--store", str(ingested_path), "--features", "0", "--scorer", "simulation", "--scorer-model",
                model, "--api-key-env", "K", "--simulator", "simulate_prompt"] + (["--base-url", url] if url else [])
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 7 and "reads the prompt's logprobs" in r.output and "compat:" in r.output, r.output


def test_read_slots_spells_the_prompt_the_ways_servers_write_tokens():
    """Decoded text, a SentencePiece dummy-prefix space on the first piece (Llama 2, Mistral through
    llama-cpp-python), raw byte-level BPE pieces (Ġ space, ĉ TAB, Ċ newline) and an echoed BOS all
    spell the prompt; tokens that do not spell it leave every slot unread, counted."""
    import math

    from autointerp.simulate.llm import read_slots

    prompt = "A\tunknown\n b\tunknown"
    slots = [[prompt.index("unknown"), prompt.rindex("unknown")]]
    hot, cold = (("9", math.log(0.5)), ("0", math.log(0.5))), (("0", math.log(0.9)), ("unknown", math.log(0.1)))
    plain = [("A", ()), ("\t", ()), ("unknown", hot), ("\n", ()), (" b", ()), ("\t", ()), ("unknown", cold)]
    variants = {
        "decoded": plain,
        "dummy prefix": [(" A", ())] + plain[1:],
        "byte-level BPE": [("A", ()), ("\u0109", ()), ("unknown", hot), ("\u010a", ()), ("\u0120b", ()),
                           ("\u0109", ()), ("unknown", cold)],
        "echoed BOS": [("<bos>", ())] + plain,
    }
    for name, tokens in variants.items():
        values, unread = read_slots(prompt, slots, tokens)
        assert values == [[4.5, 0.0]] and unread == {}, name
    values, unread = read_slots(prompt, slots, plain[:4] + [(" c", ())] + plain[5:])
    assert values == [[None, None]] and unread == {"unspelled": 2}
    values, unread = read_slots(prompt, slots, plain[:2] + [("unknown", (("x", 0.0),))] + plain[3:])
    assert values == [[None, 0.0]] and unread == {"no_digit": 1}


def test_a_compat_servers_logprobs_calls_hold_at_most_the_call_budget(ingested_path, monkeypatch):
    """llama-cpp-python's server holds ~4 x vocabulary x 4 bytes a token of a logprobs call (it was killed at 19 GB
    on JSON simulation calls of ~5,500 tokens): the client cuts such calls to --call-tokens (2,048 by default on a
    compat server), fewer windows a call, and says nothing of it in the grade but its version."""
    from autointerp.simulate.llm import estimate_tokens
    from autointerp.store import open_store

    def budgets(call_tokens: list[str]) -> tuple[list[int], dict]:
        with Loopback(reply=simulator) as server:
            r = CliRunner().invoke(app, ["label", "--store", str(ingested_path), "--features", "0", "--force",
                                         "--scorer", "simulation", "--scorer-model", "compat:sim", "--base-url",
                                         server.url + "/v1", "--no-cache", "--rpm", "60000", "--json", *call_tokens])
            assert r.exit_code == 0, r.output
            bodies = [q["body"] for q in server.requests if q["path"].endswith("/chat/completions")]
        assert all(b["top_logprobs"] == 10 for b in bodies)
        sizes = [estimate_tokens("".join(m["content"] for m in b["messages"])) + b["max_tokens"] for b in bodies]
        with open_store(ingested_path, read_only=True) as s:
            grade = s.labels.find()[0]["scores"]["simulation"]
        return sizes, grade

    free, plain = budgets([])
    tight, cut = budgets(["--call-tokens", "700"])
    assert max(free) <= 2048 and max(tight) <= 700 and len(tight) > len(free)  # every call within its budget
    assert cut["status"] == plain["status"] == "ok" and cut["version"] != plain["version"]
