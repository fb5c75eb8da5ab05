"""eval/quality.py end to end against the scripted loopback model: what CI runs instead of a real provider."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _quality(path, *args):
    r = subprocess.run([sys.executable, str(ROOT / "eval" / "quality.py"), "--store", str(path), "--loopback",
                        "--features", "12", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_quality_harness_on_the_loopback_model(store, delphi_cache):
    """A dictionary of 40 features, 30 of them token detectors: the scripted model labels those right."""
    from autointerp.ingest import ingest_delphi

    folder, _ = delphi_cache(n_seq=300, width=40, n_token_features=30, l0=2, dead=())
    ingest_delphi(store, folder)
    store.close()
    ingested_path = store.path
    res = json.loads(_quality(ingested_path, "--scorers", "simulation,detection", "--json"))
    assert res["features"] == 12 and set(res["labels"]) == {"anthropic:claude-haiku-4-5", "offline"}
    llm = res["labels"]["anthropic:claude-haiku-4-5"]
    assert llm["labelled"] == 12 and llm["scores"]["simulation"]["ok"] + llm["scores"]["simulation"]["undefined"] == 12
    assert sum(llm["scores"]["detection"]["histogram"]) == llm["scores"]["detection"]["ok"]
    assert set(res["offline_scorers"]) == {"embedding", "simulation"}  # the same labels, graded offline
    # the scripted simulator names the right tokens: own labels beat swapped ones nearly always
    sw = res["label_swap"]["simulation"]
    assert sw["own_beats_swapped"] > 0.8 and sw["mean_difference_95ci"][0] > 0
    cost = res["cost_per_feature"]
    assert set(cost["by_purpose"]) == {"explain", "simulate", "detection"}
    assert cost["by_purpose"]["explain"]["calls"] == 1 and cost["usd"] > 0
    # a rerun is served from the cache, and still reports what a fresh run pays
    again = json.loads(_quality(ingested_path, "--scorers", "simulation,detection", "--json"))
    assert again["label_swap"] == res["label_swap"] and again["cost_per_feature"]["usd"] == pytest.approx(cost["usd"])
    for purpose, c in cost["by_purpose"].items():
        assert again["cost_per_feature"]["by_purpose"][purpose] == {**c, "usd": pytest.approx(c["usd"], rel=1e-4)}
    text = _quality(ingested_path)  # the printed report
    assert "label swap" in text and "per million features" in text
