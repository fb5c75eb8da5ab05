"""Every SAE layout capture reads, written here as its project saves it, encoded against the project's formula.

Each test writes a small random SAE in the real on-disk layout (file names, tensor names and dtypes as
SAELens, EleutherAI sparsify, Gemma Scope and dictionary_learning save them), loads it with `load_sae`, and
compares `encode` with a reference written out below in numpy from that project's source (never our SAE
class). Biases and thresholds are drawn so that some latents fire on a token and others do not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from autointerp.capture import SAE, load_sae
from autointerp.capture.sae import load_saes
from autointerp.errors import CaptureError

D_IN, D_SAE, D_OUT, K = 24, 40, 20, 5


def rand(g: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (g.standard_normal(shape) * scale).astype(np.float32)


def inputs(d_in: int = D_IN, seed: int = 99) -> np.ndarray:
    return rand(np.random.default_rng(seed), 3, 7, d_in)  # two leading axes: encode keeps them


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def top_k(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of the k largest along the last axis."""
    idx = np.argsort(-a, axis=-1)[..., :k]
    return idx, np.take_along_axis(a, idx, axis=-1)


def scatter(shape, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(shape)
    np.put_along_axis(out, idx, values, axis=-1)
    return out


def t(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def f64(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as the file holds it, in float64 (bfloat16 has no numpy dtype)."""
    return tensor.detach().double().numpy()


def check(sae: SAE, x: np.ndarray, want: np.ndarray, firing: np.ndarray | None = None) -> None:
    got = sae.encode(torch.from_numpy(x)).double().numpy()
    assert got.shape == x.shape[:-1] + (sae.d_sae,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    fired = want > 0
    assert 0.02 < fired.mean() < 0.98  # some latents fire on a token, others do not
    if firing is not None:  # the rule bites: latents with a positive pre-activation that it turns off
        assert (firing & ~fired).any()
    json.dumps(sae.cfg)


def one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    message = str(e.value)
    assert "\n" not in message and str(path) in message, message
    return message


# -- SAELens ------------------------------------------------------------------------------------------

def saelens(folder: Path, arch: str, *, v5: bool = False, apply_b_dec: bool = True, normalize: str = "none",
            rescale: bool | None = None, d_out: int = D_IN, seed: int = 0, cfg_extra: dict | None = None) -> dict:
    """An SAE as SAELens writes it (cfg.json + sae_weights.safetensors); returns its numpy weights."""
    g = np.random.default_rng(seed)
    w = {"W_enc": rand(g, D_IN, D_SAE, scale=D_IN ** -0.5), "W_dec": rand(g, D_SAE, d_out, scale=0.3),
         "b_dec": rand(g, d_out, scale=0.2)}
    if arch == "gated":
        w |= {"b_gate": rand(g, D_SAE, scale=0.5), "b_mag": rand(g, D_SAE, scale=0.5),
              "r_mag": rand(g, D_SAE, scale=0.3)}
    else:
        w["b_enc"] = rand(g, D_SAE, scale=0.3)
    if arch in ("jumprelu", "jumprelu_transcoder"):
        w["threshold"] = g.uniform(0.0, 1.2, D_SAE).astype(np.float32)
    if arch == "skip_transcoder":
        w["W_skip"] = rand(g, d_out, D_IN, scale=0.1)
    tensors = {n: t(a) for n, a in w.items()}
    if arch == "batchtopk":  # a BatchTopKTrainingSAE checkpoint: the float64 topk_threshold buffer
        w["topk_threshold"] = np.float64(0.35)
        tensors["topk_threshold"] = torch.tensor(0.35, dtype=torch.float64)
    hook = "blocks.3.hook_resid_post"
    if v5:
        cfg = {"architecture": "standard" if arch == "topk" else arch, "d_in": D_IN, "d_sae": D_SAE,
               "dtype": "float32", "device": "cpu", "model_name": "gpt2", "hook_name": hook, "hook_layer": 3,
               "hook_head_index": None, "activation_fn_str": "topk" if arch == "topk" else "relu",
               "activation_fn_kwargs": {"k": K} if arch == "topk" else {}, "apply_b_dec_to_input": apply_b_dec,
               "finetuning_scaling_factor": False, "sae_lens_training_version": "5.9.1", "prepend_bos": True,
               "normalize_activations": normalize, "neuronpedia_id": None}
    else:
        meta = {"model_name": "gpt2", "hook_name": hook, "sae_lens_version": "6.12.0", "prepend_bos": True}
        cfg = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": apply_b_dec, "normalize_activations": normalize,
               "reshape_activations": "none", "metadata": meta}
        if arch == "topk":
            cfg |= {"k": K, "rescale_acts_by_decoder_norm": bool(rescale)}
        if arch == "batchtopk":  # TrainingSAEConfig.to_dict(): every field, k a float
            cfg |= {"k": 4.0, "topk_threshold_lr": 0.01, "aux_loss_coefficient": 1.0, "use_sparse_activations": False,
                    "decoder_init_norm": 0.1}
            if rescale is not None:
                cfg["rescale_acts_by_decoder_norm"] = rescale
        if arch.endswith("transcoder"):
            cfg["d_out"] = d_out
            meta["hook_name"], meta["hook_name_out"] = "blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out"
    cfg |= cfg_extra or {}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return w


def saelens_reference(x: np.ndarray, w: dict, arch: str, *, apply_b_dec: bool = True, normalize: str = "none",
                      rescale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(activations, positive pre-activations) as sae_lens/saes/*.py encode (process_sae_in, then the
    architecture's encode)."""
    x = x.astype(np.float64)
    if normalize == "constant_norm_rescale":
        x = x * np.sqrt(x.shape[-1]) / np.linalg.norm(x, axis=-1, keepdims=True)
    if normalize == "layer_norm":
        x = x - x.mean(-1, keepdims=True)
        x = x / (x.std(-1, ddof=1, keepdims=True) + 1e-5)
    if apply_b_dec and not arch.endswith("transcoder"):
        x = x - w["b_dec"]
    if arch == "gated":
        active = (x @ w["W_enc"] + w["b_gate"]) > 0
        magnitude = x @ (w["W_enc"] * np.exp(w["r_mag"].astype(np.float64))) + w["b_mag"]
        return active * relu(magnitude), magnitude > 0
    W_enc, b_enc = w["W_enc"].astype(np.float64), w["b_enc"].astype(np.float64)
    if rescale:  # what SAELens folds in when it saves the inference model (_fold_norm_topk)
        norm = np.linalg.norm(w["W_dec"].astype(np.float64), axis=1)
        W_enc, b_enc = W_enc * norm, b_enc * norm
    pre = x @ W_enc + b_enc
    if arch in ("standard", "transcoder", "skip_transcoder"):
        return relu(pre), pre > 0
    if arch in ("jumprelu", "jumprelu_transcoder"):
        return relu(pre) * (pre > w["threshold"]), pre > 0
    if arch == "batchtopk":  # saved for inference as JumpReLU, threshold = topk_threshold everywhere
        return relu(pre) * (pre > w["topk_threshold"]), pre > 0
    idx, values = top_k(pre, K)  # TopK: topk of the pre-activations, then relu
    return scatter(pre.shape, idx, relu(values)), pre > 0


@pytest.mark.parametrize("arch,kw", [
    ("standard", {}), ("standard", {"v5": True, "normalize": "constant_norm_rescale"}),
    ("standard", {"normalize": "layer_norm"}), ("standard", {"apply_b_dec": False}),
    ("topk", {}), ("topk", {"v5": True}), ("topk", {"rescale": True}),
    ("jumprelu", {}), ("jumprelu", {"v5": True, "apply_b_dec": False}),
    ("gated", {}), ("gated", {"v5": True}),
    ("batchtopk", {}), ("batchtopk", {"rescale": False}),
])
def test_saelens_matches_reference(tmp_path, arch, kw):
    w = saelens(tmp_path / "sae", arch, **kw)
    sae = load_sae(tmp_path / "sae")
    x = inputs()
    rescale = kw.get("rescale", arch == "batchtopk")  # batchtopk training configs default to true
    want, positive = saelens_reference(x, w, arch, apply_b_dec=kw.get("apply_b_dec", True),
                                       normalize=kw.get("normalize", "none"), rescale=rescale)
    check(sae, x, want, positive if arch not in ("standard",) else None)
    assert (sae.format, sae.architecture, sae.d_in, sae.d_sae, sae.d_out) == ("saelens", arch, D_IN, D_SAE, D_IN)
    assert sae.hook_name == "blocks.3.hook_resid_post" and sae.out_hook is None and not sae.transcoder
    assert sae.k == {"topk": K, "batchtopk": 4}.get(arch) and sae.cfg["k"] == sae.k
    assert sae.name == "sae" and sae.source == (tmp_path / "sae").resolve()
    np.testing.assert_array_equal(sae.W_dec.numpy(), w["W_dec"])
    assert sae.cfg["format"] == "saelens" and sae.cfg["d_sae"] == D_SAE


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder"])
def test_saelens_transcoders_read_one_hook_and_write_another(tmp_path, arch):
    w = saelens(tmp_path / "tc", arch, apply_b_dec=False, d_out=D_OUT)
    sae = load_sae(tmp_path / "tc" / "cfg.json")  # the cfg.json stands for its folder
    x = inputs()
    want, positive = saelens_reference(x, w, arch)
    check(sae, x, want, positive if arch == "jumprelu_transcoder" else None)
    assert sae.transcoder and (sae.d_in, sae.d_sae, sae.d_out) == (D_IN, D_SAE, D_OUT)
    assert tuple(sae.W_dec.shape) == (D_SAE, D_OUT)  # output directions: decoder rows at the output hook
    assert (sae.hook_name, sae.out_hook) == ("blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out")
    assert sae.architecture == ("jumprelu" if arch == "jumprelu_transcoder" else "standard")
    assert sae.cfg["file_architecture"] == arch


# -- EleutherAI sparsify ------------------------------------------------------------------------------

def sparsify(folder: Path, *, d_in: int = D_IN, latents: int = 48, k: int = K, activation: str = "topk",
             transcode: bool = False, skip: bool = False, num_latents: int | None = None, seed: int = 0,
             dtype=torch.bfloat16, cfg_extra: dict | None = None, drop: tuple[str, ...] = ()) -> dict:
    """A sparse coder as SparseCoder.save_to_disk writes it: cfg.json (SparseCoderConfig.to_dict() + d_in)
    and sae.safetensors (the module's state dict, in its dtype: often bfloat16)."""
    g = np.random.default_rng(seed)
    state = {"encoder.weight": t(rand(g, latents, d_in, scale=d_in ** -0.5), dtype),
             "encoder.bias": t(rand(g, latents, scale=0.3), dtype),
             "W_dec": t(rand(g, latents, d_in, scale=0.3), dtype), "b_dec": t(rand(g, d_in, scale=0.3), dtype)}
    if skip:
        state["W_skip"] = t(rand(g, d_in, d_in, scale=0.1), dtype)
    cfg = {"activation": activation, "expansion_factor": 2, "normalize_decoder": True,
           "num_latents": latents if num_latents is None else num_latents, "k": k, "multi_topk": False,
           "skip_connection": skip, "transcode": transcode, "d_in": d_in} | (cfg_extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: v for n, v in state.items() if n not in drop}, str(folder / "sae.safetensors"))
    return {n: f64(v) for n, v in state.items()}


def sparsify_reference(x: np.ndarray, w: dict, k: int, activation: str, transcode: bool):
    """sparsify: relu(encoder(x - b_dec)) (no b_dec for transcoders), then fused_encoder's top k (or the
    largest of each of k groups)."""
    x = x.astype(np.float64)
    if not transcode:
        x = x - w["b_dec"]
    pre = relu(x @ w["encoder.weight"].T + w["encoder.bias"])
    if activation == "topk":
        idx, values = top_k(pre, k)
    else:
        groups = pre.reshape(pre.shape[:-1] + (k, -1))
        inner = groups.argmax(-1)
        values = np.take_along_axis(groups, inner[..., None], -1)[..., 0]
        idx = inner + np.arange(0, pre.shape[-1], pre.shape[-1] // k)
    return scatter(pre.shape, idx, values), pre > 0


@pytest.mark.parametrize("kw", [{}, {"num_latents": 0}, {"activation": "groupmax", "k": 6},
                                {"transcode": True, "skip": True}, {"dtype": torch.float32}])
def test_sparsify_matches_reference(tmp_path, kw):
    folder = tmp_path / "layers.6.mlp"
    w = sparsify(folder, **kw)
    sae = load_sae(folder)
    x = inputs()
    k, activation, transcode = kw.get("k", K), kw.get("activation", "topk"), kw.get("transcode", False)
    want, positive = sparsify_reference(x, w, k, activation, transcode)
    check(sae, x, want, positive)
    assert (sae.format, sae.architecture, sae.k, sae.d_in, sae.d_sae) == ("sparsify", activation, k, D_IN, 48)
    assert sae.name == sae.hook_name == "layers.6.mlp" and sae.source == folder.resolve()
    assert sae.out_hook == ("layers.6.mlp" if transcode else None) and sae.transcoder == transcode
    np.testing.assert_array_equal(sae.W_dec.double().numpy(), w["W_dec"])  # [num_latents, d_in]
    assert sae.W_enc.dtype == torch.float32


def test_load_saes_takes_every_hookpoint_folder_in_natural_order(tmp_path):
    run = tmp_path / "run"
    w10 = sparsify(run / "layers.10", seed=1)
    w2 = sparsify(run / "layers.2", seed=2, d_in=16, latents=32, transcode=True)
    (run / "best").mkdir()  # what a sparsify run folder also holds
    (run / "config.json").write_text("{}")
    torch.save({"global_step": 3}, run / "state.pt")
    saes = load_saes(run)
    assert [s.name for s in saes] == [s.hook_name for s in saes] == ["layers.2", "layers.10"]
    assert [s.d_in for s in saes] == [16, D_IN] and [s.transcoder for s in saes] == [True, False]
    x = inputs(16)
    check(saes[0], x, sparsify_reference(x, w2, K, "topk", True)[0])
    x = inputs()
    check(saes[1], x, sparsify_reference(x, w10, K, "topk", False)[0])
    assert [s.source for s in saes] == [(run / "layers.2").resolve(), (run / "layers.10").resolve()]
    with pytest.raises(CaptureError, match=r"holds 2 sparsify hookpoint folders \(layers.2, layers.10\)") as e:
        load_sae(run)
    one_line(e, run)
    assert [s.name for s in load_saes(run / "layers.10")] == ["layers.10"]  # one SAE: itself


# -- Gemma Scope ---------------------------------------------------------------------------------------

def gemmascope(path: Path, *, seed: int = 0, keys: dict[str, str] | None = None, drop: tuple = ()) -> dict:
    """params.npz as Gemma Scope publishes it (float32 arrays W_enc, W_dec, b_enc, b_dec, threshold)."""
    g = np.random.default_rng(seed)
    w = {"W_enc": rand(g, D_IN, D_SAE, scale=D_IN ** -0.5), "W_dec": rand(g, D_SAE, D_IN, scale=0.3),
         "b_enc": rand(g, D_SAE, scale=0.3), "b_dec": rand(g, D_IN, scale=0.5),
         "threshold": g.uniform(0.0, 1.2, D_SAE).astype(np.float32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, **{(keys or {}).get(n, n): a for n, a in w.items() if n not in drop})
    return w


def gemmascope_reference(x: np.ndarray, w: dict) -> tuple[np.ndarray, np.ndarray]:
    """The Gemma Scope tutorial's JumpReLUSAE.encode: no b_dec subtracted from the input."""
    pre = x.astype(np.float64) @ w["W_enc"] + w["b_enc"]
    return (pre > w["threshold"]) * relu(pre), pre > 0


@pytest.mark.parametrize("given", ["folder", "file", "renamed", "blob", "hub link", "lowercase"])
def test_gemmascope_matches_reference(tmp_path, given):
    folder = tmp_path / "layer_3" / "width_16k" / "average_l0_9"
    npz = folder / "params.npz"
    w = gemmascope(npz, keys={"W_enc": "w_enc", "W_dec": "w_dec"} if given == "lowercase" else None)
    path, name = {"folder": (folder, "average_l0_9"), "file": (npz, "average_l0_9"),
                  "lowercase": (folder, "average_l0_9"), "renamed": (tmp_path / "l3_16k.npz", "l3_16k"),
                  "blob": (tmp_path / "blobs" / "5e1f0c", "5e1f0c"),
                  "hub link": (tmp_path / "snapshots" / "ab12" / "layer_3" / "params.npz", "layer_3")}[given]
    if given in ("renamed", "blob"):  # another name; the Hub's cache keeps a blob with no suffix
        path.parent.mkdir(exist_ok=True)
        shutil.copy(npz, path)
    if given == "hub link":  # the Hub's snapshot: params.npz links to that blob
        path.parent.mkdir(parents=True)
        path.symlink_to(npz)
    sae = load_sae(path)
    x = inputs()
    want, positive = gemmascope_reference(x, w)
    check(sae, x, want, positive)
    assert (sae.format, sae.architecture, sae.k, sae.hook_name, sae.out_hook) == ("gemmascope", "jumprelu", None,
                                                                                 None, None)
    assert sae.name == name and sae.source == (npz if path == folder else path)  # a link keeps its own name
    assert load_sae(sae.source).fingerprint == sae.fingerprint


# -- dictionary_learning ------------------------------------------------------------------------------

TRAINERS = {"AutoEncoder": "StandardTrainer", "AutoEncoderNew": "StandardTrainerAprilUpdate",
            "GatedAutoEncoder": "GatedSAETrainer", "AutoEncoderTopK": "TopKTrainer",
            "BatchTopKSAE": "BatchTopKTrainer", "MatryoshkaBatchTopKSAE": "MatryoshkaBatchTopKTrainer",
            "JumpReluAutoEncoder": "JumpReluTrainer"}


def dictionary_learning(folder: Path, dict_class: str, *, seed: int = 0, k_config: int | None = K,
                        state_extra: dict | None = None, drop: tuple = (), trainer_extra: dict | None = None) -> dict:
    """A dictionary as dictionary_learning's training loop leaves it: torch.save(ae.state_dict()) in ae.pt
    and config.json = {"trainer": trainer.config, "buffer": buffer.config}. D = 24, F = 40."""
    g = np.random.default_rng(seed)
    D, F = D_IN, D_SAE
    enc_w, enc_b = rand(g, F, D, scale=D ** -0.5), rand(g, F, scale=0.3)
    dec_w, bias = rand(g, D, F, scale=0.3), rand(g, D, scale=0.3)
    linear = {"encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w}
    params = {"W_enc": enc_w.T.copy(), "b_enc": enc_b, "W_dec": dec_w.T.copy(), "b_dec": bias}
    scalars = {"k": torch.tensor(K, dtype=torch.int), "threshold": torch.tensor(0.3)}
    state = {
        "AutoEncoder": {"bias": bias, **linear},
        "AutoEncoderNew": {**linear, "decoder.bias": bias},
        "GatedAutoEncoder": {"decoder_bias": bias, "r_mag": rand(g, F, scale=0.3), "gate_bias": rand(g, F, scale=0.4),
                             "mag_bias": rand(g, F, scale=0.4), "encoder.weight": enc_w, "decoder.weight": dec_w},
        "AutoEncoderTopK": {**scalars, "decoder.weight": dec_w, "encoder.weight": enc_w, "encoder.bias": enc_b,
                            "b_dec": bias},
        "BatchTopKSAE": {**scalars, "decoder.weight": dec_w, "encoder.weight": enc_w, "encoder.bias": enc_b,
                         "b_dec": bias},
        "MatryoshkaBatchTopKSAE": {**scalars, "group_sizes": torch.tensor([8, 12, 20]), **params},
        "JumpReluAutoEncoder": {**params, "threshold": g.uniform(0.0, 1.2, F).astype(np.float32)},
    }[dict_class] | (state_extra or {})
    state = {n: v if isinstance(v, torch.Tensor) else t(v) for n, v in state.items() if n not in drop}
    trainer = {"trainer_class": TRAINERS[dict_class], "dict_class": dict_class, "lr": 3e-4, "steps": 1000,
               "seed": 0, "activation_dim": D, "dict_size": F, "device": "cuda:0", "layer": 3,
               "lm_name": "EleutherAI/pythia-70m-deduped", "wandb_name": dict_class,
               "submodule_name": "resid_post_layer_3"}
    if k_config is not None and dict_class in ("AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        trainer["k"] = k_config
    config = {"trainer": trainer | (trainer_extra or {}),
              "buffer": {"d_submodule": D, "io": "out", "n_ctxs": 3000, "ctx_len": 128, "refresh_batch_size": 32,
                         "out_batch_size": 4096, "device": "cuda:0"}}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    return {n: f64(v) for n, v in state.items()}


def dictionary_learning_reference(x: np.ndarray, w: dict, dict_class: str) -> tuple[np.ndarray, np.ndarray]:
    """Each class's default encode (dictionary.py, trainers/top_k.py, batch_top_k.py, matryoshka_batch_top_k.py)."""
    x = x.astype(np.float64)
    if dict_class == "AutoEncoder":
        pre = (x - w["bias"]) @ w["encoder.weight"].T + w["encoder.bias"]
        return relu(pre), pre > 0
    if dict_class == "AutoEncoderNew":
        pre = x @ w["encoder.weight"].T + w["encoder.bias"]
        return relu(pre), pre > 0
    if dict_class == "GatedAutoEncoder":
        x_enc = (x - w["decoder_bias"]) @ w["encoder.weight"].T
        f_gate = (x_enc + w["gate_bias"]) > 0
        pi_mag = np.exp(w["r_mag"]) * x_enc + w["mag_bias"]
        return f_gate * relu(pi_mag), pi_mag > 0
    if dict_class == "JumpReluAutoEncoder":  # apply_b_dec_to_input is False
        pre = x @ w["W_enc"] + w["b_enc"]
        return relu(pre * (pre > w["threshold"])), pre > 0
    if dict_class == "MatryoshkaBatchTopKSAE":
        post = relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    else:
        post = relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    if dict_class == "AutoEncoderTopK":  # use_threshold=False by default
        idx, values = top_k(post, int(w["k"]))
        return scatter(post.shape, idx, values), post > 0
    return post * (post > w["threshold"]), post > 0  # BatchTopK: use_threshold=True by default


@pytest.mark.parametrize("dict_class", list(TRAINERS))
def test_dictionary_learning_matches_reference(tmp_path, dict_class):
    folder = tmp_path / "resid_post_layer_3" / "trainer_0"
    w = dictionary_learning(folder, dict_class)
    sae = load_sae(folder / "ae.pt")  # a file stands for its folder
    x = inputs()
    want, positive = dictionary_learning_reference(x, w, dict_class)
    check(sae, x, want, positive if dict_class not in ("AutoEncoder", "AutoEncoderNew") else None)
    arch = {"AutoEncoder": "standard", "AutoEncoderNew": "standard", "GatedAutoEncoder": "gated",
            "AutoEncoderTopK": "topk", "JumpReluAutoEncoder": "jumprelu"}.get(dict_class, "batchtopk")
    assert (sae.format, sae.architecture, sae.d_in, sae.d_sae) == ("dictionary_learning", arch, D_IN, D_SAE)
    assert sae.k == (K if arch in ("topk", "batchtopk") else None)
    assert sae.name == "trainer_0" and sae.source == folder.resolve() and sae.hook_name == "resid_post_layer_3"
    directions = w["W_dec"] if "W_dec" in w else w["decoder.weight"].T  # decoder columns, saved unnormalised
    np.testing.assert_allclose(sae.W_dec.double().numpy(), directions)
    assert sae.cfg["trainer"]["dict_class"] == dict_class


# -- what every SAE says about itself --------------------------------------------------------------------

def test_fingerprint_follows_the_bytes_not_the_path(tmp_path):
    saelens(tmp_path / "a", "topk")
    a = load_sae(tmp_path / "a")
    assert a.fingerprint == load_sae(tmp_path / "a" / "sae_weights.safetensors").fingerprint
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert load_sae(tmp_path / "b").fingerprint == a.fingerprint
    saelens(tmp_path / "b", "topk", seed=1)  # other weights
    assert load_sae(tmp_path / "b").fingerprint != a.fingerprint
    shutil.rmtree(tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    cfg = json.loads((tmp_path / "b" / "cfg.json").read_text())
    (tmp_path / "b" / "cfg.json").write_text(json.dumps(cfg | {"k": K - 1}))  # same weights, other config
    assert load_sae(tmp_path / "b").fingerprint != a.fingerprint
    sparsify(tmp_path / "h", seed=0)
    before = load_sae(tmp_path / "h").fingerprint
    sparsify(tmp_path / "h", seed=0, cfg_extra={"multi_topk": True})
    assert load_sae(tmp_path / "h").fingerprint != before
    w = dictionary_learning(tmp_path / "d", "AutoEncoder")
    before = load_sae(tmp_path / "d").fingerprint
    state = torch.load(tmp_path / "d" / "ae.pt", weights_only=True)
    state["encoder.bias"][0] += 1.0  # one weight changes
    torch.save(state, tmp_path / "d" / "ae.pt")
    assert load_sae(tmp_path / "d").fingerprint != before and w["bias"].shape == (D_IN,)


def test_dtype_device_and_reload(tmp_path):
    w = saelens(tmp_path / "s", "jumprelu")
    x = inputs()
    want, _ = saelens_reference(x, w, "jumprelu")
    sae = load_sae(tmp_path / "s", dtype=torch.float64)
    assert sae.W_enc.dtype == torch.float64 and sae.encode(torch.from_numpy(x)).dtype == torch.float64
    half = load_sae(tmp_path / "s").to(torch.bfloat16)
    assert half.encode(torch.from_numpy(x)).dtype == torch.bfloat16  # x is cast to the SAE's dtype
    moved = load_sae(tmp_path / "s").to("cpu")
    assert not moved.training and all(not b.requires_grad for b in moved.buffers())
    np.testing.assert_allclose(moved.encode(torch.from_numpy(x)).numpy(), want, rtol=1e-5, atol=1e-5)
    again = load_sae(sae.source)
    assert again.fingerprint == sae.fingerprint and again.cfg == sae.cfg
    (tmp_path / "link").symlink_to(tmp_path / "s")
    linked = load_sae(tmp_path / "link")  # named as given, reloaded from where it is
    assert linked.name == "link" and linked.source == (tmp_path / "s").resolve() == sae.source


# -- what a bad SAE says ------------------------------------------------------------------------------------

def resave_without(folder: Path, name: str) -> None:
    """Write a SAELens folder's weights again without tensor `name`."""
    from safetensors.torch import load_file

    path = str(folder / "sae_weights.safetensors")
    save_file({n: v for n, v in load_file(path).items() if n != name}, path)


def _write_bad(case: str, tmp_path: Path) -> tuple[Path, Path, str]:
    """(the path given, the file the message must name, the message)."""
    s, h, g, d = tmp_path / "s", tmp_path / "layers.4", tmp_path / "g", tmp_path / "d"
    if case == "empty folder":
        s.mkdir()
        return s, s, (r"holds none of cfg.json\+sae_weights.safetensors \(SAELens\), cfg.json\+sae.safetensors "
                      r"\(sparsify\), params.npz \(Gemma Scope\), ae.pt\+config.json \(dictionary_learning\)")
    if case == "missing path":
        return s, s, "does not exist"
    if case == "unknown file":
        (tmp_path / "notes.txt").write_text("hello")
        return tmp_path / "notes.txt", tmp_path / "notes.txt", "not a file of a known SAE layout"
    if case == "saelens: weights without cfg":
        saelens(s, "standard")
        (s / "cfg.json").unlink()
        return s, s, r"has sae_weights.safetensors but no cfg.json \(SAELens needs both\)"
    if case == "saelens: bad k":
        saelens(s, "topk", cfg_extra={"k": "five"})
        return s, s / "cfg.json", "k must be an integer >= 1, got 'five'"
    if case == "saelens: k above d_sae":
        saelens(s, "topk", cfg_extra={"k": D_SAE + 1})
        return s, s / "cfg.json", rf"k must be in 1..{D_SAE} \(d_sae\), got {D_SAE + 1}"
    if case == "saelens: unknown architecture":
        saelens(s, "standard", cfg_extra={"architecture": "crosscoder"})
        return s, s / "cfg.json", "SAE architecture 'crosscoder' is not supported"
    if case == "saelens: transcoder subtracting b_dec":
        saelens(s, "transcoder", d_out=D_OUT, cfg_extra={"apply_b_dec_to_input": True})
        return s, s / "cfg.json", "apply_b_dec_to_input must be false for a transcoder"
    if case == "saelens: missing threshold":
        saelens(s, "jumprelu")
        resave_without(s, "threshold")
        return s, s / "sae_weights.safetensors", r"lacks tensor\(s\) threshold"
    if case == "saelens: gated without r_mag":
        saelens(s, "gated")
        resave_without(s, "r_mag")
        return s, s / "sae_weights.safetensors", r"lacks tensor\(s\) r_mag"
    if case == "saelens: transcoder d_out":
        saelens(s, "transcoder", apply_b_dec=False, d_out=D_OUT, cfg_extra={"d_out": D_OUT + 1})
        return s, s / "sae_weights.safetensors", (rf"W_dec has shape \[{D_SAE}, {D_OUT}\] but cfg.json says "
                                                  rf"d_in={D_IN}, d_sae={D_SAE}, d_out={D_OUT + 1}, "
                                                  r"expected \[d_sae, d_out\]")
    if case == "saelens: not json":
        saelens(s, "standard")
        (s / "cfg.json").write_text("{architecture: standard")
        return s, s / "cfg.json", "not valid JSON"
    if case == "saelens: truncated weights":
        saelens(s, "standard")
        (s / "sae_weights.safetensors").write_bytes((s / "sae_weights.safetensors").read_bytes()[:100])
        return s, s / "sae_weights.safetensors", "corrupt or truncated safetensors file"
    if case == "sparsify: d_in":
        sparsify(h, cfg_extra={"d_in": 16})
        return h, h / "sae.safetensors", (rf"encoder.weight has shape \[48, {D_IN}\], expected \[num_latents, d_in\] "
                                          r"= \[48, 16\]")
    if case == "sparsify: num_latents":
        sparsify(h, num_latents=50)
        return h, h / "sae.safetensors", (r"encoder.weight has shape \[48, 24\], expected \[num_latents, d_in\] "
                                          r"= \[50, 24\]")
    if case == "sparsify: missing W_dec":
        sparsify(h, drop=("W_dec",))
        return h, h / "sae.safetensors", r"lacks tensor\(s\) W_dec"
    if case == "sparsify: activation":
        sparsify(h, cfg_extra={"activation": "relu"})
        return h, h / "cfg.json", "activation 'relu' is not supported"
    if case == "sparsify: k":
        sparsify(h, k=49)
        return h, h / "cfg.json", r"k must be in 1..48 \(num_latents\), got 49"
    if case == "sparsify: groupmax k":
        sparsify(h, activation="groupmax", k=5)
        return h, h / "cfg.json", r"groupmax needs k \(5\) to divide num_latents \(48\)"
    if case == "sparsify: signed":
        sparsify(h, cfg_extra={"signed": True})
        return h, h / "cfg.json", "signed sparse coders are not supported"
    if case == "sparsify: no d_in":
        sparsify(h)
        cfg = json.loads((h / "cfg.json").read_text())
        del cfg["d_in"]
        (h / "cfg.json").write_text(json.dumps(cfg))
        return h, h / "cfg.json", "d_in is missing"
    if case == "gemmascope: threshold shape":
        w = gemmascope(g / "params.npz")
        np.savez(g / "params.npz", **(w | {"threshold": w["threshold"][:7]}))
        return g, g / "params.npz", rf"threshold has shape \[7\], expected \[d_sae\] = \[{D_SAE}\]"
    if case == "gemmascope: missing threshold":
        gemmascope(g / "params.npz", drop=("threshold",))
        return g / "params.npz", g / "params.npz", r"lacks tensor\(s\) threshold"
    if case == "gemmascope: not a zip":
        g.mkdir()
        (g / "params.npz").write_bytes(b"not an archive")
        return g, g / "params.npz", "not a readable .npz file"
    if case == "dictionary_learning: dict_class":
        dictionary_learning(d, "AutoEncoder", trainer_extra={"dict_class": "CrossCoder"})
        return d, d / "config.json", "trainer.dict_class is 'CrossCoder', expected one of AutoEncoder,"
    if case == "dictionary_learning: transposed decoder":
        w = dictionary_learning(d, "AutoEncoder")
        state = {n: t(v) for n, v in w.items()} | {"decoder.weight": t(w["decoder.weight"].T)}
        torch.save(state, d / "ae.pt")
        return d, d / "ae.pt", (rf"decoder.weight has shape \[{D_SAE}, {D_IN}\] but config.json says "
                                rf"activation_dim={D_IN}, dict_size={D_SAE}, expected \[activation_dim, dict_size\]")
    if case == "dictionary_learning: missing b_dec":
        dictionary_learning(d, "AutoEncoderTopK", drop=("b_dec",))
        return d, d / "ae.pt", r"lacks tensor\(s\) b_dec"
    if case == "dictionary_learning: k disagrees":
        dictionary_learning(d, "AutoEncoderTopK", k_config=K + 1)
        return d, d / "ae.pt", f"k is {K} but config.json says trainer.k={K + 1}"
    if case == "dictionary_learning: k above dict_size":
        dictionary_learning(d, "AutoEncoderTopK", k_config=None, state_extra={"k": torch.tensor(D_SAE + 1)})
        return d, d / "ae.pt", rf"k must be in 1..{D_SAE} \(dict_size\), got {D_SAE + 1}"
    if case == "dictionary_learning: training backup":
        dictionary_learning(d, "AutoEncoder")
        state = torch.load(d / "ae.pt", weights_only=True)
        torch.save({"step": 500, "ae": state, "optimizer": {"state": {}, "param_groups": []},
                    "config": {}, "norm_factor": None}, d / "ae.pt")
        return d, d / "ae.pt", r"a training backup \(step 500\), not a finished dictionary"
    if case == "dictionary_learning: config without ae.pt":
        dictionary_learning(d, "AutoEncoder")
        (d / "ae.pt").unlink()
        return d, d, "holds none of"
    raise AssertionError(case)


BAD = ["empty folder", "missing path", "unknown file", "saelens: weights without cfg", "saelens: bad k",
       "saelens: k above d_sae", "saelens: unknown architecture", "saelens: transcoder subtracting b_dec",
       "saelens: missing threshold", "saelens: gated without r_mag", "saelens: transcoder d_out",
       "saelens: not json", "saelens: truncated weights", "sparsify: d_in", "sparsify: num_latents",
       "sparsify: missing W_dec", "sparsify: activation", "sparsify: k", "sparsify: groupmax k", "sparsify: signed",
       "sparsify: no d_in", "gemmascope: threshold shape", "gemmascope: missing threshold", "gemmascope: not a zip",
       "dictionary_learning: dict_class", "dictionary_learning: transposed decoder",
       "dictionary_learning: missing b_dec", "dictionary_learning: k disagrees",
       "dictionary_learning: k above dict_size", "dictionary_learning: training backup",
       "dictionary_learning: config without ae.pt"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_sae_is_one_line_naming_its_file(tmp_path, case):
    path, named, message = _write_bad(case, tmp_path)
    with pytest.raises(CaptureError, match=message) as e:
        load_saes(path)
    one_line(e, named)


@pytest.mark.parametrize("make", ["standard", "topk", "jumprelu", "gated", "batchtopk", "sparsify-topk",
                                  "sparsify-groupmax"])
@pytest.mark.parametrize("threshold", [0.0, 0.2])
def test_encode_sparse_holds_exactly_the_dense_encodes_nonzeros(tmp_path, make, threshold):
    """What capture stores (encode_sparse: TopK and GroupMax never build the dense matrix) is every entry of
    encode above the threshold, once."""
    if make.startswith("sparsify"):
        sparsify(tmp_path / "layers.1", activation=make.split("-")[1], k=6, dtype=torch.float32)
        sae = load_sae(tmp_path / "layers.1")
    else:
        saelens(tmp_path / "sae", make)
        sae = load_sae(tmp_path / "sae")
    x = torch.from_numpy(inputs(seed=5)).float().reshape(-1, D_IN)  # encode_sparse takes rows of inputs
    dense = sae.encode(x)
    row, latent, value = sae.encode_sparse(x, threshold)
    rebuilt = torch.zeros_like(dense)
    rebuilt[row, latent] = value
    want = torch.where(dense > threshold, dense, torch.zeros_like(dense))
    assert len(row) == int((want != 0).sum()) > 0
    torch.testing.assert_close(rebuilt, want)
