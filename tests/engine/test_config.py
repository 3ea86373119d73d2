"""Reading HF config.json files into `ModelConfig`, and rejecting models the engine cannot run exactly."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigError, Fp8BlockQuantization, ModelConfig, YarnScaling, read_config_file
from engine.loader import load_config
from engine.tiny_weights import PRESETS, tiny_config

# Kimi-K2-Instruct-0905's config.json, abridged to the fields with meaning (DESIGN.md §2).
K2_0905: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2",
    "vocab_size": 163840, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_hidden_layers": 61, "num_attention_heads": 64, "num_key_value_heads": 64,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "n_routed_experts": 384, "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 1, "topk_group": 1,
    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "routed_scaling_factor": 2.827, "norm_topk_prob": True,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "hidden_act": "silu", "attention_bias": False,
    "rope_theta": 50000.0, "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
    "rope_scaling": {"type": "yarn", "factor": 64.0, "original_max_position_embeddings": 4096,
                     "beta_fast": 1.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128]},
    "bos_token_id": 163584, "eos_token_id": 163585, "tie_word_embeddings": False, "num_nextn_predict_layers": 0,
    "torch_dtype": "bfloat16", "aux_loss_alpha": 0.001, "seq_aux": True, "ep_size": 1,
}


def test_k2_config() -> None:
    config = ModelConfig.from_hf(K2_0905)
    assert (config.hidden_size, config.num_hidden_layers, config.n_routed_experts) == (7168, 61, 384)
    assert config.q_lora_rank == 1536 and config.qk_head_dim == 192
    assert config.rope_scaling == YarnScaling(64.0, 4096, 1.0, 1.0, 1.0, 1.0)
    assert config.quantization == Fp8BlockQuantization((128, 128))
    assert config.bos_token_id == 163584 and config.eos_token_ids == (163585,)
    assert not config.is_moe_layer(0) and config.is_moe_layer(1) and config.is_moe_layer(60)
    m = 0.1 * math.log(64) + 1
    assert config.softmax_scale == pytest.approx(192**-0.5 * m * m, rel=1e-12)
    assert config.rope_amplitude == 1.0


def test_moonlight_style_config_without_q_lora_or_rope_scaling() -> None:
    raw = {**K2_0905, "model_type": "deepseek_v3", "q_lora_rank": None, "rope_scaling": None,
           "n_shared_experts": 2, "eos_token_id": [163586, 163585]}
    del raw["quantization_config"]
    config = ModelConfig.from_hf(raw)
    assert config.q_lora_rank is None and config.rope_scaling is None and config.quantization is None
    assert config.softmax_scale == 192**-0.5
    assert config.eos_token_ids == (163586, 163585)


def test_yarn_amplitude_when_mscales_differ() -> None:
    """DeepSeek-V2 style (mscale 0.707, mscale_all_dim 0.707 -> 1; differing values scale cos/sin)."""
    raw = {**K2_0905, "rope_scaling": {**K2_0905["rope_scaling"], "mscale": 1.0, "mscale_all_dim": 0.5}}
    config = ModelConfig.from_hf(raw)
    ln = math.log(64)
    assert config.rope_amplitude == pytest.approx((0.1 * ln + 1) / (0.05 * ln + 1))
    assert config.softmax_scale == pytest.approx(192**-0.5 * (0.05 * ln + 1) ** 2)


YARN_32 = {"type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096}


@pytest.mark.parametrize(
    ("extra", "amplitude"),
    [({}, 0.1 * math.log(32) + 1),  # no mscale_all_dim: the paper's factor on cos/sin, 1.3466
     ({"mscale": 0.707, "mscale_all_dim": 0}, 0.1 * math.log(32) + 1),  # a lone mscale is ignored
     ({"mscale": 1.0, "mscale_all_dim": 1.0}, 1.0),  # K2: the softmax scale carries it
     ({"mscale": 1.0, "mscale_all_dim": 0.5}, (0.1 * math.log(32) + 1) / (0.05 * math.log(32) + 1))],
)
def test_yarn_amplitude_is_transformers_attention_factor(extra: dict[str, float], amplitude: float) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from tests.engine.conftest import hf_config

    raw = {**K2_0905, "max_position_embeddings": 4096 * 32, "rope_scaling": {**YARN_32, **extra}}
    del raw["quantization_config"]
    _, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config(raw), "cpu")
    config = ModelConfig.from_hf(raw)
    assert attention_factor == pytest.approx(amplitude, rel=1e-12)
    assert config.rope_amplitude == pytest.approx(attention_factor, rel=1e-12)
    if not extra.get("mscale_all_dim"):
        assert config.softmax_scale == 192**-0.5


def test_transformers_saved_config_reads_like_the_checkpoint_style(tmp_path: Path) -> None:
    """transformers 5 nests rope_theta and the YaRN fields in rope_parameters and drops three fields."""
    from tests.engine.conftest import hf_config

    raw = tiny_config("k2")
    implied = ("topk_method", "scoring_func", "moe_layer_freq")
    hf_config({k: v for k, v in raw.items() if k not in implied}).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "rope_parameters" in saved and "rope_scaling" not in saved and "scoring_func" not in saved
    from_hf = load_config(tmp_path)
    assert from_hf == dataclasses.replace(ModelConfig.from_hf(raw), model_type="deepseek_v3")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_valid(preset: str) -> None:
    config = ModelConfig.from_hf(tiny_config(preset, vocab_size=1000))
    assert config.vocab_size == 1000 and config.bos_token_id == 744


UNSUPPORTED = [
    ("model_type", "llama", "model_type must be one of"),
    ("architectures", ["LlamaForCausalLM"], "architectures must include 'DeepseekV3ForCausalLM'"),
    ("scoring_func", "softmax", "scoring_func 'softmax' is not supported; supported: 'sigmoid'"),
    ("topk_method", "greedy", "topk_method 'greedy' is not supported; supported: 'noaux_tc'"),
    ("moe_layer_freq", 2, "moe_layer_freq 2 is not supported; supported: 1"),
    ("hidden_act", "gelu", "hidden_act 'gelu' is not supported"),
    ("attention_bias", True, "attention_bias True is not supported"),
    ("rope_interleave", False, "rope_interleave False is not supported"),
    ("num_key_value_heads", 8, r"num_key_value_heads \(8\) must equal num_attention_heads \(64\)"),
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_scaling type 'linear' is not supported"),
    ("rope_scaling", {"type": "yarn", "original_max_position_embeddings": 4096}, "lacks required field 'factor'"),
    ("rope_scaling", {"type": "yarn", "factor": -2.0, "original_max_position_embeddings": 4096}, "factor must be > 0"),
    ("quantization_config", {"quant_method": "compressed-tensors"}, "quant_method 'compressed-tensors' is not"),
    ("quantization_config", {"quant_method": "fp8", "fmt": "e5m2", "weight_block_size": [128, 128]}, "fmt 'e5m2'"),
    ("quantization_config", {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]},
     "activation_scheme 'static'"),
    ("quantization_config", {"quant_method": "fp8", "weight_block_size": [128]}, "weight_block_size must be two"),
]


@pytest.mark.parametrize(("field", "value", "message"), UNSUPPORTED, ids=[f"{u[0]}={u[1]}" for u in UNSUPPORTED])
def test_unsupported_values_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf({**K2_0905, field: value})


INVALID = [
    ({"n_group": 5}, r"n_routed_experts \(384\) must be a multiple of n_group \(5\)"),
    ({"n_group": 8, "topk_group": 9}, r"topk_group \(9\) must be <= n_group \(8\)"),
    ({"n_group": 8, "topk_group": 1, "num_experts_per_tok": 49}, r"eligible groups \(48\)"),
    ({"n_routed_experts": 8, "n_group": 8, "num_experts_per_tok": 1}, "scores a group by its top 2 experts"),
    ({"hidden_size": 0}, "hidden_size must be an integer >= 1, got 0"),
    ({"kv_lora_rank": "512"}, "kv_lora_rank must be an integer >= 1, got '512'"),
    ({"n_shared_experts": -1}, "n_shared_experts must be an integer >= 0, got -1"),
    ({"qk_rope_head_dim": 63}, "qk_rope_head_dim must be even"),
    ({"first_k_dense_replace": 62}, "first_k_dense_replace must be in 0..num_hidden_layers"),
    ({"routed_scaling_factor": "2.8"}, "routed_scaling_factor must be a number"),
    ({"norm_topk_prob": 1}, "norm_topk_prob must be true or false"),
    ({"rms_norm_eps": 0}, "rms_norm_eps must be > 0"),
]


@pytest.mark.parametrize(("change", "message"), INVALID, ids=[str(i[0]) for i in INVALID])
def test_inconsistent_values_are_rejected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf({**K2_0905, **change})


def test_missing_required_field() -> None:
    raw = {k: v for k, v in K2_0905.items() if k != "kv_lora_rank"}
    with pytest.raises(ConfigError, match="lacks required field 'kv_lora_rank'"):
        ModelConfig.from_hf(raw)
    raw = {k: v for k, v in K2_0905.items() if k != "rope_theta"}
    with pytest.raises(ConfigError, match="lacks required field 'rope_theta'"):
        ModelConfig.from_hf(raw)


def test_read_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(K2_0905))
    assert read_config_file(tmp_path) == read_config_file(tmp_path / "config.json") == ModelConfig.from_hf(K2_0905)
    with pytest.raises(ConfigError, match="no config file at"):
        read_config_file(tmp_path / "absent")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        read_config_file(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object, got list"):
        read_config_file(tmp_path)


def test_config_is_frozen() -> None:
    config = ModelConfig.from_hf(K2_0905)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 1  # type: ignore[misc]
