"""Live capture: run a local model (and optionally an SAE) over a text corpus into the store."""

from .corpus import pack_contexts, read_corpus
from .run import CaptureConfig, capture
from .sae import SAE, load_sae

__all__ = ["SAE", "CaptureConfig", "capture", "load_sae", "pack_contexts", "read_corpus"]
