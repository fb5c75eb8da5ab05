"""`trace`, the MRI view: a text through the model and SAE a dictionary was captured from, each token with its
labelled features; from the CLI, the API and the page's trace box. The SAE is built here: on MiniLM's
token embeddings, latent 0 fires on one token and nothing else, so where it fires is known exactly."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch
from safetensors.torch import save_file
from test_api import schema_failures
from test_browser import serving
from typer.testing import CliRunner

from autointerp.capture.model import bundled_model_path, load_model
from autointerp.cli import app
from autointerp.demo import CORPUS
from autointerp.store import Store

runner = CliRunner()
HOOK = "embeddings.word_embeddings"
WORD = "return"


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def traced(tmp_path_factory, request):
    """A store with dictionary "tok" (an SAE on MiniLM's token embeddings whose latent 0 detects WORD,
    captured over the bundled corpus and labelled offline) and "ingested" (a delphi cache: no model)."""
    tmp = tmp_path_factory.mktemp("trace")
    net, tok = load_model(bundled_model_path())
    emb = net.embeddings.word_embeddings.weight.detach()
    word = tok.convert_tokens_to_ids(WORD)
    direction = emb[word] / emb[word].norm()
    scores = emb @ direction
    others = torch.cat([scores[:word], scores[word + 1:]]).max()
    d_sae = 16
    g = torch.Generator().manual_seed(0)
    W_enc = torch.randn(384, d_sae, generator=g) * 0.02
    W_enc[:, 0] = direction
    b_enc = torch.full((d_sae,), -0.05)
    b_enc[0] = -float(scores[word] + others) / 2  # fires on WORD, on no other token
    sae = tmp / "sae"
    sae.mkdir()
    (sae / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 384, "d_sae": d_sae,
                                              "apply_b_dec_to_input": False, "normalize_activations": "none"}))
    save_file({"W_enc": W_enc.contiguous(), "b_enc": b_enc, "W_dec": torch.linalg.pinv(W_enc).contiguous(),
               "b_dec": torch.zeros(384)}, str(sae / "sae_weights.safetensors"))
    path = tmp / "trace.duckdb"
    r = cli("capture", "--corpus", CORPUS, "--hook", HOOK, "--sae", sae, "--store", path, "--dictionary", "tok",
            "--max-tokens", "6000", "--no-outputs")
    assert r.exit_code == 0, r.output
    r = cli("label", "--store", path, "--dictionary", "tok", "--features", "0", "--scorer", "embedding")
    assert r.exit_code == 0, r.output
    from autointerp.ingest import ingest_delphi
    from autointerp.ingest.synthetic import SyntheticCache, write_delphi_cache

    cache = tmp / "cache"
    write_delphi_cache(cache, SyntheticCache(n_seq=40, ctx_len=16, width=32, l0=4, model_name=str(bundled_model_path()),
                                             vocab=(2000, 2100)))
    with Store(path) as s:
        ingest_delphi(s, cache, dictionary="ingested")
        label = s.labels.find(s.dictionary("tok").dictionary_id, [0])[0]["explanation"]
    assert WORD in label  # the offline explainer named the detector's token
    return path, label


def test_trace_names_the_detector_on_its_token_and_nowhere_else(traced):
    path, label = traced
    text = f"If the key is missing, {WORD} the default; the caller may {WORD} early."
    r = cli("trace", "--store", path, "--dictionary", "tok", text, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    at = [i for i, t in enumerate(doc["tokens"]) if t.strip() == WORD]
    assert len(at) == 2
    m = doc["matrix"]
    fires = sorted(p for p, f in zip(m["position"], m["feature"]) if f == 0)
    assert fires == at  # the detector fires on its token, nowhere else
    for i in at:
        first = doc["top"][i][0]
        assert first["feature"] == 0 and first["label"] == label and first["value"] > 0
    assert len(m["position"]) == len(m["feature"]) == len(m["value"]) and all(v > 0 for v in m["value"])
    text_out = cli("trace", "--store", path, "--dictionary", "tok", text, "--top", "1")
    assert text_out.exit_code == 0
    lines = [x for x in text_out.stdout.splitlines() if f"'{WORD}'" in x or f"' {WORD}'" in x]
    assert len(lines) == 2 and all("#0 " in x and label in x for x in lines)
    assert "loading the model of tok" in text_out.stderr  # a first trace says why it waits
    narrow = cli("trace", "--store", path, "--dictionary", "tok", text, "--top", "5", env={"COLUMNS": "48"})
    rows = narrow.stdout.splitlines()[1:]
    assert len(rows) == len(doc["tokens"])  # one line per token, in order, with values
    assert all(len(x) <= 48 for x in rows) and any(x.endswith("…") for x in rows)
    assert [x.split()[0] for x in rows] == [str(i) for i in range(len(rows))]
    assert all(f"#0 {doc['top'][i][0]['value']:.2f}" in rows[i] for i in at)


def test_trace_bad_input_is_one_line(traced):
    path, _ = traced
    for args, code, words in [
        (["--dictionary", "ingested", "some text"], 5, "was ingested (delphi), not captured from a local model"),
        (["--dictionary", "tok", "x" * 2001], 2, "the text is 2,001 characters; trace takes at most 2,000"),
        (["--dictionary", "tok", "   "], 2, "the text is empty"),
        (["--dictionary", "tok", "word", "--top", "0"], 2, "--top must be from 1 to 100"),
        (["--dictionary", "nope", "word"], 3, "no dictionary named 'nope'"),
    ]:
        r = cli("trace", "--store", path, *args)
        assert r.exit_code == code, (args, r.output)
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr and "Traceback" not in r.output, r.stderr


def _get(url, **params):
    try:
        with urllib.request.urlopen(url + "api/trace?" + urllib.parse.urlencode(params), timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_api_and_the_page_trace_a_text(traced):
    from browser import page

    path, label = traced
    with serving(path, dictionary="tok", warm=True) as url:
        # serve loads the served dictionary's model as it starts: the first trace does not wait for it
        states = {}
        for _ in range(600):
            with urllib.request.urlopen(url + "api/dictionaries") as r:
                states = {d["name"]: d["tracer"] for d in json.loads(r.read())}
            if states["tok"] == "ready":
                break
            assert states["tok"] == "loading", states
            time.sleep(0.1)
        assert states == {"tok": "ready", "ingested": "none"}  # an ingested dictionary has no model to trace
        status, doc = _get(url, dictionary="tok", text=f"please {WORD} it", top=2)
        assert status == 200 and any(x["feature"] == 0 and x["label"] == label for row in doc["top"] for x in row)
        for params, words in [({"dictionary": "ingested", "text": "a"}, "not captured from a local model"),
                              ({"dictionary": "tok", "text": "y" * 2001}, "text"),
                              ({"dictionary": "tok", "text": " "}, "text")]:
            status, body = _get(url, **params)
            assert status == 400 and words in body["error"] and "\n" not in body["error"], (params, body)
        with page() as pg:
            pg.goto(url + "?dictionary=ingested")
            pg.wait_for_selector("body[data-ready='1']")
            assert pg.locator("#tracebox").is_hidden()  # nothing to trace it with
            pg.goto(url + "?dictionary=tok")
            pg.wait_for_selector("body[data-ready='1']")
            pg.fill("#trace", f'<img src=x onerror="document.title=1"> {WORD} now')
            pg.click("#tracebox button")
            pg.wait_for_selector("#traced .tokrow")
            rows = pg.locator("#traced .tokrow")
            texts = [rows.nth(i).inner_text() for i in range(rows.count())]
            hit = [t for t in texts if t.split()[0] == WORD]
            assert len(hit) == 1 and label in hit[0] and "#0" in hit[0]
            # the text as a row of tokens coloured by one feature: the detector's value on its token only
            i = texts.index(hit[0])
            pg.click("#tracefeats .tfeat[data-feature='0']")
            assert pg.get_attribute("#tracetext", "data-feature") == "0"
            vals = pg.locator("#tracetext .tok").evaluate_all(
                "ts => ts.map(t => [+t.dataset.value, getComputedStyle(t).backgroundColor])")
            assert [j for j, (v, _) in enumerate(vals) if v > 0] == [i]
            assert vals[i][1] != vals[0][1] and "rgba(0, 0, 0, 0)" in {c for _, c in vals}  # only it is shaded
            shown = float(pg.get_attribute("#tracerows .tokrow:nth-child(%d) a" % (i + 1), "data-value"))
            assert shown == pytest.approx(vals[i][0], abs=1e-3) and f"#0 {shown:.2f}" in hit[0]
            assert pg.locator("#traced img").count() == 0 and pg.title() != "1"  # the text is shown as text
            pg.click(f"#traced a:has-text('{label[:20]}')")
            pg.wait_for_selector("body[data-ready='1'] #title")
            assert "0" in pg.inner_text("#title")  # the feature's own page
        failures = schema_failures(url, {"GET /api/trace"})  # generated texts, as its OpenAPI allows
        assert not failures, "\n".join(failures[:3])
