"""Sample: per-feature explain and score windows."""

from .sampler import Sampler
from .select import select_chunk

__all__ = ["Sampler", "select_chunk"]
