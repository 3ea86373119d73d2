"""Write small random checkpoints of the K2 / DeepSeek-V3 architecture in the real on-disk format.

A config.json with HF field names plus safetensors (bf16, fp32 or block fp8 with `weight_scale_inv`, one file
or sharded with `model.safetensors.index.json`), so tests and demos exercise the same loader path as a real
checkpoint without downloading one. The tensor list is spelled out here, independently of the model class,
as a second statement of the checkpoint layout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save

from engine.config import ModelConfig
from engine.errors import TinyCheckpointError
from engine.fp8 import DEFAULT_BLOCK, quantize_block_fp8
from engine.tiny_tokenizer import TINY_VOCAB_SIZE

TinyDtype = Literal["fp32", "bf16", "fp8"]
DEFAULT_VOCAB = TINY_VOCAB_SIZE
"""The tiny tokenizer's vocabulary, so a tiny model and the tiny tokenizer fit together by default."""
INIT_STD = 0.02

FP8_QUANTIZATION = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "activation_scheme": "dynamic",
    "weight_block_size": list(DEFAULT_BLOCK),
}

_COMMON: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "hidden_act": "silu",
    "attention_bias": False,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "moe_layer_freq": 1,
    "norm_topk_prob": True,
    "tie_word_embeddings": False,
    "num_nextn_predict_layers": 0,
}

# Shaped like DESIGN.md's checkpoints, shrunk. Widths are chosen so block-fp8 grids have ragged edges
# (80, 112, 304, 352 are not multiples of 128) and several blocks (192, 256, 304, 352 > 128).
PRESETS: dict[str, dict[str, Any]] = {
    "k2": {
        **_COMMON, "model_type": "kimi_k2",
        "hidden_size": 128, "intermediate_size": 352, "moe_intermediate_size": 48,
        "num_hidden_layers": 3, "first_k_dense_replace": 1,
        "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": 96, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
        "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
        "routed_scaling_factor": 2.827, "rope_theta": 50000.0,
        "rope_scaling": {"type": "yarn", "factor": 32.0, "original_max_position_embeddings": 256,
                         "beta_fast": 1.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-6,
    },
    "moonlight": {
        **_COMMON, "model_type": "deepseek_v3",
        "hidden_size": 96, "intermediate_size": 256, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "first_k_dense_replace": 1,
        "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": None, "kv_lora_rank": 48, "qk_nope_head_dim": 24, "qk_rope_head_dim": 16, "v_head_dim": 24,
        "n_routed_experts": 16, "n_shared_experts": 2, "num_experts_per_tok": 6, "n_group": 1, "topk_group": 1,
        "routed_scaling_factor": 2.446, "rope_theta": 50000.0, "rope_scaling": None,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
    },
    "deepseek_v3": {
        **_COMMON, "model_type": "deepseek_v3",
        "hidden_size": 112, "intermediate_size": 304, "moe_intermediate_size": 40,
        "num_hidden_layers": 4, "first_k_dense_replace": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": 80, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
        "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
        "routed_scaling_factor": 2.5, "rope_theta": 10000.0,
        "rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 256,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        "max_position_embeddings": 10240, "rms_norm_eps": 1e-6, "num_nextn_predict_layers": 1,
    },
}


def tiny_config(config: Mapping[str, Any] | str, *, vocab_size: int = DEFAULT_VOCAB) -> dict[str, Any]:
    """A full config.json dict: a preset by name or a given dict, with K2's layout of special ids.

    As in K2 (163,584 ordinary ids, then 256 specials) the special ids sit in the last 256 of the vocab:
    `[BOS]` first, `[EOS]` next, `<|im_end|>` two after `[BOS]`; Moonlight stops on `<|im_end|>`.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise TinyCheckpointError(f"unknown preset {config!r}; presets: {sorted(PRESETS)}")
        raw = dict(PRESETS[config])
        first_special = max(vocab_size - 256, 0)
        raw["bos_token_id"] = first_special
        raw["eos_token_id"] = first_special + (2 if config == "moonlight" else 1)
        raw["vocab_size"] = vocab_size
        return raw
    raw = dict(config)
    raw.setdefault("vocab_size", vocab_size)
    return raw


def checkpoint_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a bf16 checkpoint and its shape, MTP layers included."""
    d = cfg.hidden_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, d)}
    for layer in range(cfg.num_hidden_layers + cfg.num_nextn_predict_layers):
        shapes.update(_layer_shapes(cfg, layer))
    for layer in range(cfg.num_hidden_layers, cfg.num_hidden_layers + cfg.num_nextn_predict_layers):
        p = f"model.layers.{layer}."
        shapes.update({p + "enorm.weight": (d,), p + "hnorm.weight": (d,), p + "eh_proj.weight": (d, 2 * d),
                       p + "shared_head.norm.weight": (d,)})
    shapes["model.norm.weight"] = (d,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, d)
    return shapes


def _layer_shapes(cfg: ModelConfig, layer: int) -> dict[str, tuple[int, ...]]:
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    a = f"model.layers.{layer}.self_attn."
    shapes: dict[str, tuple[int, ...]] = {
        f"model.layers.{layer}.input_layernorm.weight": (d,),
        f"model.layers.{layer}.post_attention_layernorm.weight": (d,),
        a + "kv_a_proj_with_mqa.weight": (cfg.kv_lora_rank + cfg.qk_rope_head_dim, d),
        a + "kv_a_layernorm.weight": (cfg.kv_lora_rank,),
        a + "kv_b_proj.weight": (heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank),
        a + "o_proj.weight": (d, heads * cfg.v_head_dim),
    }
    if cfg.q_lora_rank is None:
        shapes[a + "q_proj.weight"] = (heads * cfg.qk_head_dim, d)
    else:
        shapes[a + "q_a_proj.weight"] = (cfg.q_lora_rank, d)
        shapes[a + "q_a_layernorm.weight"] = (cfg.q_lora_rank,)
        shapes[a + "q_b_proj.weight"] = (heads * cfg.qk_head_dim, cfg.q_lora_rank)
    m = f"model.layers.{layer}.mlp."
    if not cfg.is_moe_layer(layer):
        return shapes | _mlp_shapes(m, d, cfg.intermediate_size)
    shapes[m + "gate.weight"] = (cfg.n_routed_experts, d)
    shapes[m + "gate.e_score_correction_bias"] = (cfg.n_routed_experts,)
    for e in range(cfg.n_routed_experts):
        shapes |= _mlp_shapes(f"{m}experts.{e}.", d, cfg.moe_intermediate_size)
    if cfg.n_shared_experts:
        shapes |= _mlp_shapes(m + "shared_experts.", d, cfg.moe_intermediate_size * cfg.n_shared_experts)
    return shapes


def _mlp_shapes(prefix: str, d: int, inter: int) -> dict[str, tuple[int, ...]]:
    return {prefix + "gate_proj.weight": (inter, d), prefix + "up_proj.weight": (inter, d),
            prefix + "down_proj.weight": (d, inter)}


def _is_block_quantized(name: str, shape: tuple[int, ...]) -> bool:
    """Which tensors fp8 checkpoints store in block fp8: every projection but the router, embedding and head."""
    excluded = ("model.embed_tokens.weight", "lm_head.weight")
    return len(shape) == 2 and name not in excluded and not name.endswith("mlp.gate.weight")


def _random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """fp32 values like a trained model's scale: weights N(0, 0.02), norms near 1, router bias near 0."""
    noise = torch.randn(shape, generator=generator)
    if name.endswith("norm.weight"):
        return 1.0 + INIT_STD * noise
    if name.endswith("e_score_correction_bias"):
        return 0.01 * noise
    return INIT_STD * noise


def write_tiny_checkpoint(
    directory: str | Path,
    config: Mapping[str, Any] | str,
    *,
    dtype: TinyDtype = "bf16",
    shards: int = 1,
    seed: int = 0,
    vocab_size: int = DEFAULT_VOCAB,
) -> Path:
    """Write config.json and random weights for `config` (a dict or a name in `PRESETS`) into `directory`."""
    if dtype not in ("fp32", "bf16", "fp8"):
        raise TinyCheckpointError(f"dtype must be 'fp32', 'bf16' or 'fp8', got {dtype!r}")
    if shards < 1:
        raise TinyCheckpointError(f"shards must be >= 1, got {shards}")
    raw = tiny_config(config, vocab_size=vocab_size)
    if dtype == "fp8":
        raw["quantization_config"] = dict(FP8_QUANTIZATION)
    raw["torch_dtype"] = "float32" if dtype == "fp32" else "bfloat16"
    cfg = ModelConfig.from_hf(raw)
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in checkpoint_shapes(cfg).items():
        value = _random_tensor(name, shape, generator)
        if dtype == "fp8" and _is_block_quantized(name, shape):
            tensors[name], tensors[name + "_scale_inv"] = quantize_block_fp8(value, DEFAULT_BLOCK)
        elif name.endswith("e_score_correction_bias") or dtype == "fp32":
            tensors[name] = value
        else:
            tensors[name] = value.to(torch.bfloat16)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    _save_shards(root, tensors, shards)
    return root


def _save_shards(root: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    """One `model.safetensors`, or `shards` files of consecutive tensors plus the index naming each one's file.

    Consecutive runs can split a weight from its scale, as real shards sometimes do.
    """
    if shards == 1:
        _write_safetensors(root / "model.safetensors", tensors)
        return
    names = list(tensors)
    if shards > len(names):
        raise TinyCheckpointError(f"shards ({shards}) exceeds the {len(names)} tensors")
    per_shard = -(-len(names) // shards)
    groups = [{n: tensors[n] for n in names[i * per_shard : (i + 1) * per_shard]} for i in range(shards)]
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        _write_safetensors(root / file, group)
        weight_map.update(dict.fromkeys(group, file))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write like the JSON files beside it, so every file of the checkpoint gets the same umask-derived mode
    (safetensors' own `save_file` goes through a private 0600 temporary file)."""
    path.write_bytes(save(tensors, metadata={"format": "pt"}))
