"""llm: the provider layer shared by LLM explainers and scorers (providers, limits, retries, cache, ledger)."""

from .client import LLMClient, RetryConfig
from .limits import LimitConfig, RateLimiter
from .providers import ChatRequest, ChatResponse, ProviderError, Usage, make_provider

__all__ = ["ChatRequest", "ChatResponse", "LLMClient", "LimitConfig", "ProviderError", "RateLimiter", "RetryConfig",
           "Usage", "make_provider"]
