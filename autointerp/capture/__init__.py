"""Live capture: run a local model (and optionally an SAE) over a text corpus into the store, in this process
or split across Ray workers (`capture_on_ray`); `trace` runs one text through a captured dictionary's model
and names its features token by token."""

from .corpus import pack_contexts, read_corpus
from .distributed import RayOptions, capture_on_ray
from .held import HeldModel, HeldSAE, TextList
from .run import CaptureConfig, capture
from .sae import SAE, load_sae
from .trace import Tracer, trace_text

__all__ = ["SAE", "CaptureConfig", "HeldModel", "HeldSAE", "RayOptions", "TextList", "Tracer", "capture",
           "capture_on_ray", "load_sae", "pack_contexts", "read_corpus", "trace_text"]
