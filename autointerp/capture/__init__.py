"""Live capture: run a local model (and optionally an SAE) over a text corpus into the store; `trace` runs
one text through a captured dictionary's model and names its features token by token."""

from .corpus import pack_contexts, read_corpus
from .run import CaptureConfig, capture
from .sae import SAE, load_sae
from .trace import Tracer, trace_text

__all__ = ["SAE", "CaptureConfig", "Tracer", "capture", "load_sae", "pack_contexts", "read_corpus",
           "trace_text"]
