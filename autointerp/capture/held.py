"""What a notebook already holds, captured without writing a file first: a model object with its tokenizer
(`HeldModel`), an SAE as an `encode` callable (`HeldSAE`), and texts as a list (`TextList`). Each goes into
`CaptureConfig` where a path would (`model=`, `saes=`, `corpus=`), and `capture` runs them as it runs files:
same hooks, same packing, same store, same resume.

    net = AutoModel.from_pretrained(...); tok = AutoTokenizer.from_pretrained(...)
    sae = HeldSAE(my_sae.encode, d_in=384, d_sae=4096, hook="encoder.layer.3", W_dec=my_sae.W_dec)
    autointerp.capture(store, CaptureConfig(model=HeldModel(net, tok, "minilm"), corpus=TextList(texts),
                                           saes=(sae,)))

A resume must find the same inputs again, and nothing held has a file to hash, so each is fingerprinted by
what it is: the model by its parameters' names, shapes, dtypes and a strided sample of their values; the
tokenizer by its vocabulary; the SAE by its sizes and what `encode` returns on a fixed probe input; the texts
by their content. The store records the model as `memory:NAME`: `trace` and a Ray capture need files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import CaptureError

PROBE_ROWS = 8  # rows of the fixed input an SAE's fingerprint encodes
SAMPLE_VALUES = 64  # values a parameter contributes to the model's fingerprint (strided over it)


def _name(kind: str, name: str) -> str:
    name = str(name).strip()
    if not name or "/" in name or name != " ".join(name.split()):
        raise CaptureError(f"a held {kind} needs a name without '/' or extra spaces (it names the dictionary), "
                           f"got {name!r}")
    return name


@dataclass(frozen=True, eq=False)
class HeldModel:
    """A loaded model (a torch module whose submodules the hooks name, as `capture --model` loads one) and
    its tokenizer (a Hugging Face tokenizer), under `name`: the `<model>` of each dictionary's name. Used
    where it is, on its own device and in its own dtype."""

    module: torch.nn.Module
    tokenizer: Any
    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _name("model", self.name))
        if not isinstance(self.module, torch.nn.Module):
            raise CaptureError(f"HeldModel.module must be a torch.nn.Module, got {type(self.module).__name__}")
        for need in ("all_special_ids", "get_vocab", "__len__"):
            if not hasattr(self.tokenizer, need):
                raise CaptureError(f"HeldModel.tokenizer must be a Hugging Face tokenizer (it lacks {need})")

    @property
    def ref(self) -> str:
        """How the store names it (a dictionary's `model`)."""
        return f"memory:{self.name}"

    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def dtype(self) -> torch.dtype:
        p = next((p for p in self.module.parameters() if p.is_floating_point()), None)
        return p.dtype if p is not None else torch.float32

    @torch.no_grad()
    def identity(self) -> str:
        """Parameters' names, shapes and dtypes and a strided sample of each one's values: equal for the same
        weights, different after any training step that moves the sampled values (cheap at any size)."""
        h = hashlib.sha256(f"held-model-v1|{type(self.module).__name__}|".encode())
        for name, p in self.module.state_dict().items():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLE_VALUES)
            sample = flat[::step][:SAMPLE_VALUES].float().cpu().numpy()
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
            h.update(np.ascontiguousarray(sample, dtype="<f4").tobytes())
        return h.hexdigest()

    def tokenizer_identity(self) -> str:
        """The tokenizer's class, size and whole vocabulary (token -> id): what decides the ids."""
        t = self.tokenizer
        h = hashlib.sha256(f"held-tokenizer-v1|{type(t).__name__}:{len(t)}".encode())
        for tok, i in sorted(t.get_vocab().items(), key=lambda kv: kv[1]):
            h.update(f"{i}\t{tok}\n".encode())
        return h.hexdigest()


class HeldSAE:
    """An SAE as a callable: `encode(x)` maps inputs [n, d_in] (the hook's activations, on the model's device)
    to latents [n, d_sae]. `hook`: where it reads (else CaptureConfig's `hook`); `W_dec` [d_sae, d_out]: its
    output directions, stored with their logit lens when given; `name`: the `<SAE>` of its dictionary's name.
    The callable runs under `torch.no_grad()`; its output is checked for shape on the first batch."""

    format = "held"
    transcoder = False

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], d_in: int, d_sae: int,
                 hook: str | None = None, *, W_dec: torch.Tensor | None = None, name: str = "sae") -> None:  # noqa: N803
        if not callable(encode):
            raise CaptureError(f"HeldSAE needs a callable encode, got {type(encode).__name__}")
        if int(d_in) < 1 or int(d_sae) < 1:
            raise CaptureError(f"HeldSAE sizes must be positive, got d_in={d_in}, d_sae={d_sae}")
        if W_dec is not None and (W_dec.ndim != 2 or W_dec.shape[0] != int(d_sae)):
            raise CaptureError(f"HeldSAE W_dec must be [d_sae={d_sae}, d_out], got {list(W_dec.shape)}")
        self._encode, self.d_in, self.d_sae = encode, int(d_in), int(d_sae)
        self.hook_name, self.W_dec, self.name = hook, W_dec, _name("SAE", name)
        self.source = f"memory:{self.name}"
        self.cfg = {"d_in": self.d_in, "d_sae": self.d_sae, "hook_name": hook, "held": True}
        self._fingerprint: str | None = None
        self._device, self._dtype = torch.device("cpu"), torch.float32  # where capture's inputs come from

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        out = self._encode(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (*x.shape[:-1], self.d_sae):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CaptureError(f"SAE {self.name!r}: encode of {list(x.shape)} gave {got}, expected "
                               f"{[*x.shape[:-1], self.d_sae]}")
        return out

    def encode_sparse(self, x: torch.Tensor, threshold: float = 0.0) -> tuple[torch.Tensor, ...]:
        """(input row, latent id, value) of every latent above `threshold`, as the file-backed SAE gives."""
        acts = self.encode(x)
        keep = acts > threshold
        where = keep.nonzero()
        return where[:, 0], where[:, 1], acts[keep]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> HeldSAE:
        """As it is: a held SAE stays where its owner put it. Notes the device and dtype capture's inputs
        (the hook's activations) will come in, for the fingerprint's probe."""
        self._device = torch.device(device) if device is not None else self._device
        self._dtype = dtype or self._dtype
        return self

    @property
    def fingerprint(self) -> str:
        """Its sizes, its directions and what it returns on a fixed probe input: equal for the same SAE."""
        if self._fingerprint is None:
            probe = torch.from_numpy(np.random.default_rng(0).standard_normal((PROBE_ROWS, self.d_in)))
            h = hashlib.sha256(f"held-sae-v1|{self.d_in}|{self.d_sae}|{self.hook_name}|".encode())
            h.update(self._probe(probe).tobytes())
            if self.W_dec is not None:  # a strided sample: a 2^20-latent decoder is gigabytes
                flat = self.W_dec.detach().reshape(-1)
                sample = flat[::max(1, flat.numel() // (SAMPLE_VALUES * 64))].float().cpu().numpy()
                h.update(np.ascontiguousarray(sample, dtype="<f4").tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _probe(self, probe: torch.Tensor) -> np.ndarray:
        """encode(probe) on the device and in the dtype capture will give it (the model's)."""
        out = self.encode(probe.to(device=self._device, dtype=self._dtype)).detach().float().cpu().numpy()
        return np.round(np.ascontiguousarray(out, dtype="<f4"), 4)


@dataclass(frozen=True)
class TextList:
    """Documents held in memory, as a capture corpus: each string one document (packed as a `.txt`'s lines
    are). `name`: the corpus's name in the store."""

    texts: Sequence[str]
    name: str = "texts"
    kind: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        if isinstance(self.texts, str):
            raise CaptureError("TextList takes a list of documents, not one string: wrap it as [text]")
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "name", _name("corpus", self.name))
        bad = next((i for i, t in enumerate(self.texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise CaptureError(f"TextList: document {bad} is a {type(self.texts[bad]).__name__}, not a string")

    @property
    def path(self) -> str:
        """What messages call it (a corpus file's path, for a file)."""
        return f"<{self.name}: {len(self.texts):,} texts in memory>"

    @property
    def source(self) -> str:
        return f"memory:{self.name}"

    def documents(self) -> Iterator[str]:
        return (t for t in self.texts if t.strip())

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"text-v1|memory|")
        for t in self.texts:
            b = t.encode()
            h.update(f"{len(b)}:".encode())
            h.update(b)
        return h.hexdigest()
