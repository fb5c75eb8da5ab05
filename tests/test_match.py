"""Matching two dictionaries over one corpus: a dictionary against a permuted, noised copy of itself (a
stand-in for a retrained SAE) recovers its partners by co-activation and by decoder cosine; bad pairs are
one-line errors that write nothing."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.ingest.synthetic import add_retrained_copy
from autointerp.match import MatchConfig, match_dictionaries
from autointerp.store import Store

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(r, code: int, message: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output, r.output


@pytest.fixture
def pair(ingested_path):
    """The ingested dictionary with random output directions, and a retrained copy of it: (path, perm)."""
    with Store(ingested_path) as s:
        d = s.dictionary()
        with s.writer() as w:
            w.add_directions(d.dictionary_id, np.random.default_rng(3).standard_normal((d.width, 48)))
        perm = add_retrained_copy(s, d, "retrained", seed=1)
    return ingested_path, perm


def test_a_permuted_noised_copy_recovers_its_partners_by_both_methods(pair):
    path, perm = pair
    r = cli("match", "--store", path, "--from", "layers.3", "--to", "retrained", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc["methods"]) == {"coactivation", "decoder"} and doc["methods"]["decoder"]["search"] == "exhaustive"
    with Store(path, read_only=True) as s:
        a, b = s.dictionary("layers.3"), s.dictionary("retrained")
        live = np.flatnonzero(s.firing_counts(b.dictionary_id) > 0)
        for method in ("coactivation", "decoder"):
            m = s.matches(a.dictionary_id, b.dictionary_id, method)
            right = perm[m["from_feature"]] == m["to_feature"]
            on_live = np.isin(m["to_feature"], live)
            assert right[on_live].sum() >= 0.95 * len(live), (method, right[on_live].sum(), len(live))
            assert np.all(m["similarity"] <= 1.0 + 1e-5)
        co = s.matches(a.dictionary_id, b.dictionary_id, "coactivation")
        assert set(co["to_feature"].tolist()) == set(live.tolist())  # a feature that never fires has no partner
        assert doc["live_to"] == len(live) and doc["methods"]["coactivation"]["pairs"] == len(live)
        assert doc["agreement"] >= 0.95
        assert set(s.match_methods(a.dictionary_id, b.dictionary_id)) == {"coactivation", "decoder"}
    # matching again replaces, never duplicates
    assert cli("match", "--store", path, "--from", "layers.3", "--to", "retrained", "--json").exit_code == 0
    with Store(path, read_only=True) as s:
        assert len(s.matches(1, 2, "coactivation")["to_feature"]) == len(live)


def test_co_activation_is_found_in_small_ranges_and_decoder_among_its_candidates(pair):
    """Ranges of a few rows each (the memory bound at work), and a decoder search too large to be exhaustive
    (among the co-activation candidates): the same partners."""
    path, perm = pair
    with Store(path) as s:
        a, b = s.dictionary("layers.3"), s.dictionary("retrained")
        whole = match_dictionaries(s, a, b, MatchConfig())
        before = {m: s.matches(a.dictionary_id, b.dictionary_id, m) for m in ("coactivation", "decoder")}
        small = match_dictionaries(s, a, b, MatchConfig(pairs_per_chunk=200, exhaustive_flops=0))
        assert small.methods["decoder"]["search"] == "coactivation candidates"
        for m in ("coactivation", "decoder"):
            after = s.matches(a.dictionary_id, b.dictionary_id, m)
            live = after["to_feature"]
            agree = before[m]["from_feature"][np.isin(before[m]["to_feature"], live)] == after["from_feature"]
            assert agree.mean() >= 0.99, m
        assert small.methods["coactivation"]["pairs"] == whole.methods["coactivation"]["pairs"]
        np.testing.assert_allclose(s.matches(a.dictionary_id, b.dictionary_id, "coactivation")["similarity"],
                                   before["coactivation"]["similarity"], atol=1e-5)


def test_bad_pairs_are_one_line_errors_and_write_nothing(pair, delphi_cache):
    from autointerp.ingest import ingest_delphi

    path, _ = pair
    other, _ = delphi_cache("other", n_seq=40, seed=9)  # other tokens: another corpus
    with Store(path) as s:
        ingest_delphi(s, other, dictionary="other")
        a = s.dictionary("layers.3")
        with s.writer() as w:  # directions of another width
            w.add_directions(s.dictionary("other").dictionary_id, np.ones((s.dictionary("other").width, 8)))
        digest = s.content_digest()
    base = ["match", "--store", path]
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "layers.3"), 9, "match a dictionary with another")
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "other"), 9, "over the same tokens")
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "retrained", "--method", "bogus"), 2,
                    "unknown match method 'bogus'")
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "nope"), 3, "no dictionary named 'nope'")
    with Store(path, read_only=True) as s:
        assert s.content_digest() == digest
    with Store(path) as s:
        with s.writer() as w:  # a third dictionary over the same corpus, with 8-wide directions
            b = w.add_dictionary(name="narrow", corpus_id=a.corpus_id, model="m", hook="h", width=4, kind="external",
                                 source="test")
            b.append([0, 1], [0, 1], [0, 0], [1.0, 2.0])
            b.finish()
            w.add_directions(b.dictionary_id, np.ones((4, 8)))
        with s.writer() as w:
            b = w.add_dictionary(name="bare", corpus_id=a.corpus_id, model="m", hook="h", width=4, kind="external",
                                 source="test")
            b.append([0], [0], [0], [1.0])
            b.finish()
        digest = s.content_digest()
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "narrow"), 9, "48-wide and those of 'narrow' 8-wide")
    _one_line_error(cli(*base, "--from", "layers.3", "--to", "bare", "--method", "decoder"), 9,
                    "'bare' has no output directions")
    with Store(path, read_only=True) as s:
        assert s.content_digest() == digest
    r = cli(*base, "--from", "layers.3", "--to", "narrow", "--method", "coactivation", "--json")
    assert r.exit_code == 0 and set(json.loads(r.stdout)["methods"]) == {"coactivation"}
