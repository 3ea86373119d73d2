"""Shared fixtures for the engine tests: tiny transformers DeepseekV3 models saved as real checkpoints.

transformers' `DeepseekV3ForCausalLM` is the independent numerical reference. Each tiny model is built once
per session from one of `engine.tiny_weights.PRESETS`, in fp32 with the eager attention path, given norm
weights and router biases away from their init values (so that loading them wrongly shows), and saved with
`save_pretrained`, which writes the checkpoint's per-expert tensor names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.tiny_weights import tiny_config

VOCAB = 1280
HF_INIT_STD = 0.05
"""Wider than a trained model's 0.02 so greedy continuations of random models do not collapse to a loop."""
SEEDS = {"k2": 1, "moonlight": 2, "deepseek_v3": 3}


@dataclass(frozen=True)
class HfReference:
    model: Any
    """transformers.DeepseekV3ForCausalLM, eval mode, fp32."""
    path: Path
    """Its save_pretrained checkpoint."""


def hf_config(raw: dict[str, Any], **overrides: Any) -> Any:
    """A transformers DeepseekV3Config from a config.json dict (model_type is a class attribute there)."""
    from transformers import DeepseekV3Config

    fields = {k: v for k, v in raw.items() if k not in ("model_type", "quantization_config", "torch_dtype")}
    config = DeepseekV3Config(**fields, **overrides)
    config._attn_implementation = "eager"
    return config


def build_hf_model(raw: dict[str, Any], seed: int) -> Any:
    from transformers import DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(hf_config(raw, initializer_range=HF_INIT_STD)).eval()
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("norm.weight"):
                tensor.add_(0.1 * torch.randn_like(tensor))
            elif name.endswith("e_score_correction_bias"):
                tensor.copy_(0.02 * torch.randn_like(tensor))
    return model


@pytest.fixture(scope="session")
def hf_reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], HfReference]:
    """preset name -> a saved tiny transformers model, built on first request."""
    built: dict[str, HfReference] = {}

    def get(preset: str) -> HfReference:
        if preset not in built:
            model = build_hf_model(tiny_config(preset, vocab_size=VOCAB), seed=SEEDS[preset])
            path = tmp_path_factory.mktemp(f"hf_{preset}")
            model.save_pretrained(path)
            built[preset] = HfReference(model, path)
        return built[preset]

    return get
