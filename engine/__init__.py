"""The local inference engine for the Kimi K2 / DeepSeek-V3 architecture.

Owns the model, fp8 kernels, checkpoint loader, tokenizer, chat format, KV cache, scheduler and server.
May import torch, safetensors and tiktoken, and triton only lazily, inside GPU code (CUDA builds of torch bring
it; the `engine` extra does not); never imports `kcode`, `tools` or `swe_harness`.
"""

from engine.llm import LLM
from engine.sampling import SamplingParams
from engine.tiny import make_tiny

__all__ = ["LLM", "SamplingParams", "make_tiny"]
