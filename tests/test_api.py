"""`autointerp serve`'s JSON API over real HTTP (uvicorn on loopback), its OpenAPI checked by schemathesis,
and label search. The store is the browser tests' one: its tokens and labels hold markup, which the API
returns as data."""

import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from test_browser import EVIL_IMG, WIDTH, make_evil_store, serving

from autointerp.store import open_store


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The evil store served on a free port for the module's tests: (base url, store path)."""
    path = make_evil_store(tmp_path_factory.mktemp("served"))
    with serving(path) as url:
        yield url, path


def get(url: str, path: str, **params):
    q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    try:
        with urllib.request.urlopen(url + path + ("?" + q if q else ""), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_features_are_sorted_filtered_and_paged_by_the_server(served):
    url, path = served
    status, ds = get(url, "api/dictionaries")
    assert status == 200 and ds[0]["name"] == "evil" and ds[0]["width"] == WIDTH
    scorers = ds[0]["scorers"]
    assert scorers == ["embedding", "simulation"]
    with open_store(path, read_only=True) as s:  # the truth, from the store
        d = s.dictionary("evil")
        stats = {st.feature: st for st in s.activations.feature_stats(d.dictionary_id)}
        labels = {r["feature_id"]: r for r in s.labels.find(d.dictionary_id)}
    status, first = get(url, "api/features", limit=7)
    assert status == 200 and first["total"] == WIDTH and [r["feature"] for r in first["rows"]] == list(range(7))
    for r in first["rows"]:
        assert r["label"] == labels[r["feature"]]["explanation"] and r["n_firing"] == stats[r["feature"]].n_firing
        assert r["scores"]["simulation"] == labels[r["feature"]]["scores"]["simulation"]["value"]
    every = []
    for off in range(0, WIDTH, 64):  # paging covers every feature once
        every += [r["feature"] for r in get(url, "api/features", offset=off, limit=64)[1]["rows"]]
    assert every == list(range(WIDTH))
    for sort in ["feature", "density", "max", *scorers]:
        for order in ("asc", "desc"):
            rows = get(url, "api/features", sort=sort, order=order, limit=1000)[1]["rows"]
            vals = [r["feature"] if sort == "feature" else r[sort] if sort in ("density", "max")
                    else r["scores"][sort] for r in rows]
            known = [v for v in vals if v is not None]
            assert known == sorted(known, reverse=order == "desc"), (sort, order)
            assert vals[len(known):] == [None] * (len(vals) - len(known))  # missing values last, either way
    for sort in scorers:  # every grade comes with its interval; by=lower ranks by its lower end
        rows = get(url, "api/features", sort=sort, by="lower", order="desc", limit=1000)[1]["rows"]
        lows = [r["ci"][sort][0] for r in rows if r["ci"][sort]]
        assert lows and lows == sorted(lows, reverse=True), sort
        for r in rows:
            if r["ci"][sort]:
                lo, hi = r["ci"][sort]
                assert lo <= r["scores"][sort] <= hi
                assert [lo, hi] == labels[r["feature"]]["scores"][sort]["ci"]
    assert get(url, "api/features", by="upper")[0] == 400
    status, hit = get(url, "api/features", q="ONERROR")  # case-insensitive, in DuckDB
    assert status == 200 and hit["total"] >= 1 and all("onerror" in r["label"].lower() for r in hit["rows"])
    assert any(json.dumps(EVIL_IMG) in r["label"] for r in hit["rows"])  # markup comes back as data
    assert get(url, "api/features", q="17")[1]["rows"][0]["feature"] == 17  # an id finds its feature


def test_feature_page_and_errors(served):
    url, path = served
    status, doc = get(url, "api/features/0")
    assert status == 200 and doc["feature"] == 0 and doc["labels"] and doc["top"] and doc["stats"]["n_firing"] > 0
    assert any(t == EVIL_IMG for w in doc["top"] for t in w["tokens"])
    assert doc["labels"][0]["scores"]["simulation"]["status"] == "ok" and "simulation" in doc
    for path_, params, code, words in [
        ("api/features", {"sort": "bogus"}, 400, "sort: Input should be"),
        ("api/features", {"offset": -1}, 400, "offset"),
        ("api/features", {"limit": 1001}, 400, "limit"),
        ("api/features", {"dictionary": "nope"}, 400, "dictionary: Input should be 'evil'"),
        ("api/features", {"order": "up"}, 400, "order"),
        ("api/features/99999", {}, 404, "no feature"),
        ("api/features/abc", {}, 400, "feature"),
        ("api/search", {"q": ""}, 400, "q"),
        ("api/search", {"q": "x", "limit": 0}, 400, "limit"),
        ("api/nowhere", {}, 404, "Not Found"),  # the router's own 404 is our one-line JSON too
    ]:
        status, body = get(url, path_, **params)
        assert status == code and words in body["error"] and "\n" not in body["error"], (path_, params, body)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        req = urllib.request.Request(url + "api/features", method=method, data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 405
    with urllib.request.urlopen(urllib.request.Request(url + "api/features", method="HEAD"), timeout=30) as r:
        assert r.status == 200 and r.read() == b""


def test_search_finds_labels_by_meaning(served):
    url, path = served
    with open_store(path, read_only=True) as s:
        d = s.dictionary("evil")
        labels = {r["feature_id"]: r["explanation"] for r in s.labels.find(d.dictionary_id)}
    target = 5  # a word detector: its label names its word
    status, res = get(url, "api/search", q=labels[target], limit=5)
    assert status == 200 and res["rows"][0]["feature"] == target and res["rows"][0]["label"] == labels[target]
    sims = [r["similarity"] for r in res["rows"]]
    assert sims == sorted(sims, reverse=True) and len({r["feature"] for r in res["rows"]}) == len(sims)
    assert res["rows"][0]["top"]["tokens"] and res["rows"][0]["scores"]


def test_concurrent_readers_get_consistent_answers(served):
    """Every kind of request at once, naming the dictionary as the browser does (it once read the store's
    shared connection from request threads: 'connection is busy' 500s and false 'unknown dictionary' 400s)."""
    url, _ = served
    asks = [("api/features", {"sort": "simulation", "order": "desc", "limit": 50}),
            ("api/features", {"dictionary": "evil", "sort": "density", "q": "a", "limit": 20}),
            ("api/features/3", {"dictionary": "evil"}),
            ("api/dictionaries", {}),
            ("api/search", {"q": "a word", "dictionary": "evil", "limit": 5})]
    want = [get(url, p, **q) for p, q in asks]
    assert all(status == 200 for status, _ in want), want
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: get(url, asks[i % len(asks)][0], **asks[i % len(asks)][1]), range(80)))
    assert all(g == want[i % len(asks)] for i, g in enumerate(got))


def schema_failures(url: str, labels: set[str]) -> list[str]:
    """schemathesis's checks on the operations `labels` of the API at `url`: no 5xx, no schema-valid request
    refused, every response as the schema says. Returns the failures."""
    schema = schemathesis.openapi.from_url(url + "openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert labels <= {op.label for op in ops}
    failures = []
    for op in [op for op in ops if op.label in labels]:
        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def check(case):
            try:
                case.call_and_validate()
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                failures.append(f"{op.label}: {str(e)[:400]}")

        check()
    return failures


def test_openapi_holds_under_schemathesis(served):
    """Every operation of /openapi.json, with generated parameters (trace, whose dictionaries here have no
    model and answer 400, is checked on a captured dictionary in test_trace.py)."""
    schema = schemathesis.openapi.from_url(served[0] + "openapi.json")
    assert {r.ok().label for r in schema.get_all_operations()} == {
        "GET /api/dictionaries", "GET /api/features", "GET /api/features/{feature}", "GET /api/search",
        "GET /api/trace", "GET /api/calibration", "GET /api/calibration/{run_id}", "GET /api/overview"}
    failures = schema_failures(served[0], {"GET /api/dictionaries", "GET /api/features",
                                           "GET /api/features/{feature}", "GET /api/search", "GET /api/calibration",
                                           "GET /api/calibration/{run_id}", "GET /api/overview"})
    assert not failures, "\n".join(failures[:3])


def test_label_vectors_are_written_with_labels(served):
    _, path = served
    from autointerp.search import LABELS

    with open_store(path, read_only=True) as s:
        ids, keys, m = s.vectors.label_matrix(LABELS)
        assert len(ids) == s.labels.labelled_count(s.dictionary("evil").dictionary_id) == WIDTH
        assert m.dtype == np.float16 and np.allclose(np.linalg.norm(m.astype(np.float32), axis=1), 1, atol=1e-2)
        assert not s.vectors.unindexed_labels(LABELS)
