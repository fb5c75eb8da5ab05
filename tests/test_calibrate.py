"""Labels checked against the truth: patterns on text with known answers, rule files, planting, the
calibration run (offline scorers, the loopback LLM), the offline explainer on planted features, and gold
dictionaries kept apart from real ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from autointerp.calibrate import CATEGORIES, CalibrateConfig, calibrate, load_rules
from autointerp.calibrate.rules import parse_rule
from autointerp.cli import app
from autointerp.errors import CalibrationError
from autointerp.patterns import NUMBER, Pattern, Words
from autointerp.reading import read_label

# BERT-style token strings as the store keeps them: a word's first piece carries its leading space
TOKS = ["[CLS]", " this", " is", " not", " a", " tu", "ple", " .", " the", " words", ' "', " quoted", " here", ' "',
        " (", " and", " par", "ens", " )", " dict", " ,", " list", " ,", " and", " tuple", " .", "[SEP]", " 123", "4",
        " items", " tuple", " tuple", "[SEP]"]


def fired(pattern: Pattern, tokens=TOKS) -> list[tuple[str, float]]:
    act = pattern.evaluate(Words.of(tokens))
    return [(t, round(float(v), 3)) for t, v in zip(tokens, act) if v]


@pytest.mark.parametrize("pattern, expected", [
    # a word across subword tokens fires on every piece; specials never fire
    (Pattern("words", frozenset({"tuple"})), [(" tu", 1), ("ple", 1), (" tuple", 1), (" tuple", 1), (" tuple", 1)]),
    (Pattern("tokens", frozenset({"ple"})), [("ple", 1)]),
    (Pattern("after", frozenset({"not"})), [(" a", 1)]),
    (Pattern("before", frozenset({","})), [(" dict", 1), (" list", 1)]),
    (Pattern("after", frozenset({NUMBER})), [(" items", 1)]),
    (Pattern("inside", span="quotes"), [(" quoted", 1), (" here", 1)]),
    (Pattern("inside", span="parentheses", strength="rising"), [(" and", 1), (" par", 2), ("ens", 2)]),
    (Pattern("inside", span="parentheses", place=1), [(" and", 1)]),
    (Pattern("sentence_end"), [(" tu", 1), ("ple", 1), (" tuple", 1)]),
    (Pattern("sentence_start"), [(" this", 1), (" the", 1), (" 123", 1), ("4", 1)]),
    (Pattern("list_item"), [(" dict", 1), (" list", 1), (" tuple", 1)]),
    (Pattern("list_item", place=1), [(" dict", 1)]),
    # every token of the document that holds the topic's word, and none of the other
    (Pattern("document", frozenset({"items"})), [(" 123", 1), ("4", 1), (" items", 1), (" tuple", 1), (" tuple", 1)]),
    # repeated within its document: the second "tuple" of each (the first document's is " tu" + "ple" before it)
    (Pattern("repeat", strength="rising"), [(" tuple", 1), (" tuple", 1)]),
    (Pattern("repeat", place=2), [(" tuple", 1), (" tuple", 1)]),
    (Pattern("regex", regex=r"\b(\d+)\b", strength="length"), [(" 123", 4), ("4", 4)]),
])
def test_each_kind_of_pattern_fires_where_its_answer_is_known(pattern, expected):
    assert fired(pattern) == expected


def test_a_repeated_word_grows_stronger_each_time_within_its_document():
    toks = ["[CLS]", " a", " tree", " and", " a", " tree", " and", " a", " tree", "[SEP]", " tree"]
    assert fired(Pattern("repeat", strength="rising"), toks) == [(" tree", 1), (" tree", 2)]


def test_words_are_read_the_same_from_sentencepiece_strings():
    # Gemma-style strings: punctuation without a leading space, a word split in three pieces
    toks = ["<bos>", "It", " is", " not", " un", "believ", "able", ".", " Never", " mind", "<eos>"]
    w = Words.of(toks)
    assert w.words == ["it", "is", "not", "unbelievable", "never", "mind"]
    assert fired(Pattern("after", frozenset({"not"})), toks) == [(" un", 1), ("believ", 1), ("able", 1)]
    assert fired(Pattern("sentence_end"), toks) == [(" un", 1), ("believ", 1), ("able", 1)]


@pytest.mark.parametrize("label, kind, words, fires", [
    ('the word right after "not"', "after", {"not"}, set()),
    ('words following "not"', "after", {"not"}, set()),
    ('the word "be" after "not"', "after", {"not"}, {"be"}),
    ("the word right after a number", "after", {NUMBER}, set()),
    ('the word right before an opening parenthesis "("', "before", {"("}, set()),
    ("a name followed by a comma", "before", {","}, set()),
    ('words inside double quotation marks ("...")', "inside", set(), set()),
    ("the last word of a sentence (right before the full stop)", "sentence_end", set(), set()),
    ("items of a comma-separated list", "list_item", set(), set()),
    ('every token of a passage about files ("file", "path")', "document", {"file", "path"}, set()),
    ("a word repeated from earlier in the text, stronger each time", "repeat", set(), set()),
    ('the token "l"', "words", {"l"}, set()),
])
def test_the_label_reader_finds_what_a_label_states(label, kind, words, fires):
    first = read_label(label)[0]
    assert (first.kind, set(first.words), set(first.fires)) == (kind, words, fires)


def test_a_label_of_what_the_feature_writes_states_nothing_about_where_it_fires():
    assert [p.kind for p in read_label('the word "of"; promotes " (" next')] == ["words", "tokens"]
    assert read_label("text that is hard to describe") == []


def test_the_builtin_library_covers_every_kind_of_rule():
    rules = load_rules()
    assert len(rules) >= 30 and len({r.name for r in rules}) == len(rules)
    assert {r.category for r in rules} == set(CATEGORIES)
    assert all(r.near_misses.keys() == {"narrower", "broader", "sibling"} for r in rules)
    # every true description reads back as its own rule's pattern (a word class's as some of its words), and no
    # near miss does
    for r in rules:
        read = read_label(r.description)
        if r.kind in ("words", "document"):  # a class or a topic read from the examples a label quotes
            assert read[0].kind == r.kind and read[0].words <= r.pattern.words, r.name
        elif r.kind != "regex":
            assert r.pattern in read, r.name
        assert all(r.pattern not in read_label(t) for t in r.near_misses.values()), r.name


@pytest.mark.parametrize("body, message", [
    ('kind = "colour"\ndescription = "x"\nnarrower = "y"', "unknown kind 'colour'"),
    ('kind = "words"\nwords = []\ndescription = "x"\nnarrower = "y"', "empty word list"),
    ('kind = "words"\ndescription = "x"\nnarrower = "y"', "needs a non-empty word list"),
    ('kind = "regex"\nregex = "\\\\d+"\ndescription = "x"\nnarrower = "y"', "no capture group"),
    ('kind = "regex"\nregex = "(\\\\d+"\ndescription = "x"\nnarrower = "y"', "does not compile"),
    ('kind = "words"\nwords = ["a"]\ncolour = "red"\ndescription = "x"\nnarrower = "y"', "unknown key 'colour'"),
    ('kind = "words"\nwords = ["a"]\nnarrower = "y"', "no description"),
    ('kind = "words"\nwords = ["a"]\ndescription = "x"', "at least one near miss"),
    ('kind = "inside"\nspan = "braces"\ndescription = "x"\nnarrower = "y"', "span"),
    ('kind = "after"\nwords = ["a"]\nstrength = "rising"\ndescription = "x"\nnarrower = "y"', "strength"),
])
def test_a_bad_rule_is_one_line_naming_it(tmp_path, body, message):
    f = tmp_path / "rules.toml"
    f.write_text(f'[[rule]]\nname = "mine"\n{body}\n')
    with pytest.raises(CalibrationError) as e:
        load_rules(f, builtin=False)
    assert "'mine'" in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_a_rule_file_that_is_not_toml_is_refused(tmp_path):
    f = tmp_path / "rules.toml"
    f.write_text("[[rule]\nname = ")
    with pytest.raises(CalibrationError, match="not valid TOML"):
        load_rules(f)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_rules(tmp_path / "none.toml")


def test_a_rule_round_trips_through_its_dict():
    r = parse_rule({"name": "x", "kind": "inside", "span": "quotes", "strength": "rising", "description": "d",
                    "sibling": "s"}, "test", "test")
    assert type(r).from_dict(r.to_dict()) == r and r.category == "graded"


# -- on a real corpus -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory, minilm):
    """MiniLM's layer-2 neurons captured over 12,000 tokens of the bundled corpus (real English text)."""
    from autointerp.capture import CaptureConfig, capture
    from autointerp.demo import CORPUS
    from autointerp.store import Store

    path = tmp_path_factory.mktemp("calibrate") / "s.duckdb"
    with Store(path) as s:
        capture(s, CaptureConfig(model=minilm, corpus=CORPUS, neurons=("encoder.layer.2.intermediate",),
                                 dictionary="neurons", max_tokens=12_000, device="cpu"))
    return path


@pytest.fixture(scope="module")
def calibrated(corpus_store, tmp_path_factory):
    """The built-in library calibrated on corpus_store (offline scorers and explainer, 2 seeds), as JSON."""
    r = CliRunner().invoke(app, ["calibrate", "--store", str(corpus_store), "--seeds", "2", "--budgets", "20,all",
                                 "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_offline_simulation_ranks_the_truth_first_and_embedding_cannot(calibrated):
    rows = {(r["scorer"], r["budget"], r["category"]): r for r in calibrated["scorers"]}
    sim, emb = rows[("simulation", "all", "all")], rows[("embedding", "all", "all")]
    assert calibrated["calibrated"] >= 20 and sim["rules"] == calibrated["calibrated"]
    assert sim["truth_first"]["rate"] >= 0.9 and rows[("simulation", "all", "context")]["truth_first"]["rate"] >= 0.9
    assert sim["near_auroc"]["value"] > 0.9 and sim["truth_first"]["ci"][0] <= sim["truth_first"]["rate"]
    # the embedding scorer judges whole windows: the word after "not" and the word "not" share them
    assert emb["truth_first"]["rate"] < 0.5
    assert 0 <= sim["coverage"]["rate"] <= 1 and sim["coverage"]["n"] == 2 * sim["rules"]
    assert ("simulation", 20, "all") in rows  # the window budget's row


def test_the_offline_explainer_names_context_and_comes_close_to_the_truth(calibrated):
    (off,) = calibrated["explainers"]
    labels = off["labels"]
    assert labels["after-not"] == 'the word right after "not"'
    assert labels["inside-parens"].startswith("words inside parentheses")
    assert labels["sentence-end"] == "the last word of a sentence"
    assert abs(off["scorers"]["simulation"]["gap"]) <= 0.1 and off["names_words"]["rate"] >= 0.8


def test_the_run_is_stored_and_the_gold_dictionary_kept_apart(corpus_store, calibrated):
    from autointerp.store import open_store

    with open_store(corpus_store, read_only=True) as s:
        (run,) = s.calibrations.runs()
        grades = s.calibrations.grades(run["run_id"], rule="after-not")
        assert run["summary"]["scorers"] == calibrated["scorers"] and run["gold"] == calibrated["gold"]
        assert {g["candidate"] for g in grades} >= {"truth", "narrower", "broader", "sibling", "unrelated"}
        assert [d.name for d in s.dictionaries()] == ["neurons"]  # never listed unless asked
        gold = s.dictionary(calibrated["gold"])  # ... by name
        assert gold.kind == "gold" and s.dictionary().name == "neurons"
        assert s.sql("SELECT count(*) FROM label_vectors WHERE dictionary_id = ?", [gold.dictionary_id])[0][0] == 0
    out = CliRunner().invoke(app, ["dictionaries", "--store", str(corpus_store), "--json"])
    assert [d["name"] for d in json.loads(out.stdout)["dictionaries"]] == ["neurons"]


def test_calibrating_again_reuses_the_planted_features(corpus_store, calibrated):
    from autointerp.store import open_store

    with open_store(corpus_store) as s:
        out = calibrate(s, s.dictionary(), CalibrateConfig(scorers=("simulation",), explainers=(), seeds=1,
                                                           budgets=(None,)))
        assert not out.gold.created and out.gold.dictionary.name == calibrated["gold"]
        assert len(s.calibrations.runs()) == 2


def test_a_user_rule_is_planted_and_calibrated(corpus_store, tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[[rule]]\nname = "the-return"\nkind = "words"\nwords = ["return", "returns"]\n'
                 'description = \'the words "return" and "returns"\'\nsibling = \'the word "yield"\'\n')
    r = CliRunner().invoke(app, ["calibrate", "--store", str(corpus_store), "--rules", str(f), "--no-builtin",
                                 "--scorer", "simulation", "--explainer", "none", "--seeds", "1", "--budgets", "all",
                                 "--unrelated", "0", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["rules"] == 1 and doc["calibrated"] == 1 and doc["gold"].startswith("gold/")
    assert doc["scorers"][0]["truth_first"]["rate"] == 1.0


@pytest.mark.parametrize("rule, message", [
    ('kind = "regex"\nregex = \'\\b(zqxj\\w+)\\b\'', "its regex never matches the corpus"),
    ('kind = "regex"\nregex = \'(.)\'', "of the corpus's tokens (at most 50%)"),
])
def test_a_rule_that_fires_nowhere_or_everywhere_writes_nothing(corpus_store, tmp_path, rule, message):
    from autointerp.store import open_store

    f = tmp_path / "bad.toml"
    f.write_text(f'[[rule]]\nname = "odd"\n{rule}\ndescription = "x"\nnarrower = "y"\n')
    with open_store(corpus_store, read_only=True) as s:
        before = s.content_digest()
    r = CliRunner().invoke(app, ["calibrate", "--store", str(corpus_store), "--rules", str(f), "--no-builtin",
                                 "--scorer", "simulation", "--explainer", "none"])
    assert r.exit_code == 11 and "'odd'" in r.output and message in r.output and len(r.output.splitlines()) == 1
    with open_store(corpus_store, read_only=True) as s:
        assert s.content_digest() == before


def test_bad_calibration_options_are_usage_errors(corpus_store, calibrated):
    for args in (["--scorer", "intruder"], ["--seeds", "0"], ["--budgets", "2"], ["--budgets", "ten"],
                 ["--dictionary", calibrated["gold"]]):
        r = CliRunner().invoke(app, ["calibrate", "--store", str(corpus_store), *args])
        assert r.exit_code == 2 and len(r.output.splitlines()) == 1, (args, r.output)


def test_an_llm_scorer_is_calibrated_through_the_real_sdk(corpus_store, monkeypatch, tmp_path):
    """The loopback's scripted simulator predicts 10 on the tokens a label quotes: it ranks quoted word
    classes first and cannot read a context rule, and the calibration says so. Its scripted explainer (the
    token marked most often) labels the gold features, alone and best of 2."""
    from loopback import Loopback, scripted

    from autointerp.calibrate.rules import BUILTIN

    mine = tmp_path / "four.toml"  # four rules of the library: two word classes, two context rules
    blocks = BUILTIN.read_text().split("[[rule]]")
    mine.write_text("".join("[[rule]]" + b for b in blocks[1:] if any(f'name = "{n}"' in b for n in (
        "negations", "prepositions", "after-the", "sentence-end"))))
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=scripted) as server:
        r = CliRunner().invoke(app, ["calibrate", "--store", str(corpus_store), "--scorer", "simulation",
                                     "--scorer-model", "anthropic:sim", "--base-url", server.url,
                                     "--api-key-env", "K", "--explainer", "anthropic:sim", "--candidates", "2",
                                     "--seeds", "1", "--budgets", "20", "--rules", str(mine), "--no-builtin",
                                     "--rpm", "60000", "--json"])
        assert r.exit_code == 0, r.output
        assert server.count() > 0
    doc = json.loads(r.stdout)
    rows = {r["category"]: r for r in doc["scorers"]}
    assert rows["word class"]["truth_first"]["rate"] > rows["context"]["truth_first"]["rate"]
    assert np.isfinite(rows["all"]["near_auroc"]["value"])
    one, best = doc["explainers"]
    assert (one["explainer"], one["candidates"], best["candidates"]) == ("anthropic:sim", 1, 2)
    assert one["labelled"] == best["labelled"] == 4 and one["labels"]["negations"].startswith('the token "')
    assert set(one["scorers"]) == {"simulation"} and one["scorers"]["simulation"]["gap"] is not None


def test_the_calibration_page_shows_the_run_served_and_exported(corpus_store, calibrated, tmp_path):
    """`serve` shows /calibration from the API; `export --format html` carries the same page with its data
    beside it; `export --format calibration` writes every run as JSON."""
    from browser import page
    from test_browser import serving

    out = tmp_path / "cal.json"
    r = CliRunner().invoke(app, ["export", "--store", str(corpus_store), "--out", str(out), "--format", "calibration",
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    newest = doc["runs"][0]
    assert json.loads(r.stdout)["runs"] == len(doc["runs"]) >= 1
    after_not = [x for x in newest["rules"] if x["rule"] == "after-not" and x["scorer"] == "simulation"]
    if newest["run_id"] == calibrated["run_id"]:
        assert after_not[0]["truth"]["value"] > after_not[0]["near_miss"]["value"]
    site = tmp_path / "site"
    r = CliRunner().invoke(app, ["export", "--store", str(corpus_store), "--out", str(site), "--format", "html"])
    assert r.exit_code == 0, r.output
    with serving(corpus_store) as url, page() as pg:
        for where in (url + "calibration", (site / "calibration.html").as_uri()):
            pg.goto(where)
            pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
            pg.select_option("#run", calibrated["run_id"])
            pg.wait_for_function("document.querySelector('#rules').innerText.includes('after-not')")
            rows = pg.locator("#scorers tbody tr").all_inner_texts()
            assert any(x.startswith("simulation\tall") for x in rows), rows
            assert pg.locator("#rules tbody tr").count() >= calibrated["calibrated"]
            assert "the word right after \"not\"" in pg.inner_text("#rules") and not pg.errors
