"""The model's configuration, read from a checkpoint's HF `config.json`.

One frozen value holds every number the K2 / DeepSeek-V3 model needs. Values the model cannot run exactly
(another router, another RoPE scaling, another quantisation) are rejected here with a `ConfigError` that
names the field and what is supported, so a wrong checkpoint fails before any weight is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

MODEL_TYPES = ("deepseek_v3", "kimi_k2")
ARCHITECTURE = "DeepseekV3ForCausalLM"

# transformers' DeepseekV3 writes config files without these three fields because it implements only
# these values; DeepSeek-V3, Moonlight and K2 spell them out with exactly these values. As the only
# supported values they are checked, not stored.
_IMPLIED = {"topk_method": "noaux_tc", "scoring_func": "sigmoid", "moe_layer_freq": 1}


@dataclass(frozen=True)
class YarnScaling:
    """YaRN RoPE extension (`rope_scaling.type == "yarn"`)."""

    factor: float
    """Context extension factor: low frequencies are divided by it."""
    original_max_position_embeddings: int
    """Context length of pre-training; sets which frequencies are interpolated."""
    beta_fast: float = 32.0
    """Rotations over the original context above which a frequency is kept (extrapolated)."""
    beta_slow: float = 1.0
    """Rotations below which a frequency is fully interpolated."""
    mscale: float = 1.0
    """Amplitude correction applied to cos/sin together with `mscale_all_dim`."""
    mscale_all_dim: float = 0.0
    """Sets the softmax-scale correction `m*m`, `m = 0.1*mscale_all_dim*ln(factor) + 1`."""


@dataclass(frozen=True)
class Fp8BlockQuantization:
    """Block-fp8 weights (`quant_method: fp8`, e4m3, a per-block fp32 `weight_scale_inv`)."""

    weight_block_size: tuple[int, int]
    """(rows, columns) of weight covered by one scale; edge blocks may be ragged."""


@dataclass(frozen=True)
class ModelConfig:
    """The K2 / DeepSeek-V3 architecture, with HF field names."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    """Width of the dense MLP in the first `first_k_dense_replace` layers."""
    moe_intermediate_size: int
    """Width of each routed expert; shared experts are `n_shared_experts` times as wide."""
    num_hidden_layers: int
    """Decoder layers; checkpoint layers at or above this index are multi-token-prediction layers."""
    num_attention_heads: int
    q_lora_rank: int | None
    """Rank of the query compression; None projects queries straight from the hidden state."""
    kv_lora_rank: int
    """Width of the cached key/value latent."""
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    n_group: int
    """Expert groups; with more than one, only the best `topk_group` groups are eligible."""
    topk_group: int
    routed_scaling_factor: float
    norm_topk_prob: bool
    """Renormalise the chosen experts' weights to sum to one before scaling."""
    first_k_dense_replace: int
    rope_theta: float
    rope_scaling: YarnScaling | None
    max_position_embeddings: int
    rms_norm_eps: float
    tie_word_embeddings: bool = False
    quantization: Fp8BlockQuantization | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    num_nextn_predict_layers: int = 0
    model_type: str = "deepseek_v3"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                     "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                     "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "num_experts_per_tok",
                     "n_group", "topk_group", "max_position_embeddings"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("n_shared_experts", "first_k_dense_replace", "num_nextn_predict_layers"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.q_lora_rank is not None:
            _check_int("q_lora_rank", self.q_lora_rank, minimum=1)
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"qk_rope_head_dim must be even (RoPE rotates pairs), got {self.qk_rope_head_dim}")
        self._check_routing()
        if self.first_k_dense_replace > self.num_hidden_layers:
            raise ConfigError(
                f"first_k_dense_replace must be in 0..num_hidden_layers ({self.num_hidden_layers}), "
                f"got {self.first_k_dense_replace}"
            )
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            raise ConfigError(
                f"rope_theta and rms_norm_eps must be > 0, got {self.rope_theta} and {self.rms_norm_eps}"
            )

    def _check_routing(self) -> None:
        if self.n_routed_experts % self.n_group:
            raise ConfigError(
                f"n_routed_experts ({self.n_routed_experts}) must be a multiple of n_group ({self.n_group})"
            )
        if self.topk_group > self.n_group:
            raise ConfigError(f"topk_group ({self.topk_group}) must be <= n_group ({self.n_group})")
        per_group = self.n_routed_experts // self.n_group
        if self.n_group > 1 and per_group < 2:
            raise ConfigError(f"grouped routing scores a group by its top 2 experts; groups have {per_group}")
        if self.num_experts_per_tok > self.topk_group * per_group:
            raise ConfigError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds the experts in the "
                f"{self.topk_group} eligible groups ({self.topk_group * per_group})"
            )

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense_replace

    @property
    def softmax_scale(self) -> float:
        """`qk_head_dim**-0.5`, times YaRN's `m*m` so attention entropy holds at extended length."""
        scale = self.qk_head_dim**-0.5
        if self.rope_scaling is not None and self.rope_scaling.mscale_all_dim:
            m = _yarn_mscale(self.rope_scaling.factor, self.rope_scaling.mscale_all_dim)
            scale *= m * m
        return scale

    @property
    def rope_amplitude(self) -> float:
        """Factor on cos/sin (YaRN's attention factor), as transformers' `_compute_yarn_parameters` computes it.

        With both `mscale` and `mscale_all_dim` set it is the ratio of their `0.1*m*ln(factor)+1` terms: 1.0
        when they are equal, as in K2, whose softmax scale carries the correction instead. With
        `mscale_all_dim` absent or 0 the softmax is left alone and cos/sin carry the paper's `0.1*ln(factor)+1`
        (1.3466 for factor 32); a lone `mscale` is ignored there, as transformers ignores it.
        """
        yarn = self.rope_scaling
        if yarn is None:
            return 1.0
        if yarn.mscale and yarn.mscale_all_dim:
            return _yarn_mscale(yarn.factor, yarn.mscale) / _yarn_mscale(yarn.factor, yarn.mscale_all_dim)
        return _yarn_mscale(yarn.factor, 1.0)

    @classmethod
    def from_hf(cls, raw: Mapping[str, Any]) -> ModelConfig:
        """Build from a parsed HF config.json (real checkpoints' or transformers 5's `save_pretrained`)."""
        _check_identity(raw)
        _check_fixed_features(raw)
        rope_theta, rope_scaling = _parse_rope(raw)
        q_lora_rank = _require(raw, "q_lora_rank")
        eos = raw.get("eos_token_id")
        eos_ids = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
        fields: dict[str, Any] = {
            name: _require(raw, name)
            for name in ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                         "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                         "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "n_shared_experts",
                         "num_experts_per_tok", "n_group", "topk_group", "routed_scaling_factor",
                         "norm_topk_prob", "first_k_dense_replace", "max_position_embeddings",
                         "rms_norm_eps")
        }
        for name in ("routed_scaling_factor", "rms_norm_eps"):
            fields[name] = _number(name, fields[name])
        if not isinstance(fields["norm_topk_prob"], bool):
            raise ConfigError(f"norm_topk_prob must be true or false, got {fields['norm_topk_prob']!r}")
        return cls(
            **fields,
            q_lora_rank=q_lora_rank,
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            quantization=_parse_quantization(raw.get("quantization_config")),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids,
            num_nextn_predict_layers=raw.get("num_nextn_predict_layers") or 0,
            model_type=raw["model_type"],
        )


def read_config_file(path: str | Path) -> ModelConfig:
    """Read `config.json` from a checkpoint directory, or from the file itself."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"no config file at {file}") from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} must hold a JSON object, got {type(raw).__name__}")
    return ModelConfig.from_hf(raw)


def _yarn_mscale(factor: float, mscale: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _number(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def _require(raw: Mapping[str, Any], name: str) -> Any:
    if name not in raw:
        raise ConfigError(f"config.json lacks required field {name!r}")
    return raw[name]


def _check_identity(raw: Mapping[str, Any]) -> None:
    model_type = raw.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    architectures = raw.get("architectures")
    if architectures is not None and ARCHITECTURE not in architectures:
        raise ConfigError(f"architectures must include {ARCHITECTURE!r}, got {architectures!r}")


def _check_fixed_features(raw: Mapping[str, Any]) -> None:
    """Reject settings other than the one each supported checkpoint uses."""
    fixed: dict[str, Any] = {**_IMPLIED, "hidden_act": "silu", "attention_bias": False, "rope_interleave": True}
    for name, supported in fixed.items():
        value = raw.get(name, supported)
        if value != supported:
            raise ConfigError(f"{name} {value!r} is not supported; supported: {supported!r}")
    heads, kv_heads = raw.get("num_attention_heads"), raw.get("num_key_value_heads")
    if kv_heads is not None and kv_heads != heads:
        raise ConfigError(
            f"num_key_value_heads ({kv_heads}) must equal num_attention_heads ({heads}): MLA shares one latent"
        )


def _parse_rope(raw: Mapping[str, Any]) -> tuple[float, YarnScaling | None]:
    """Real checkpoints use `rope_theta` + `rope_scaling`; transformers 5 nests both in `rope_parameters`."""
    params = raw.get("rope_scaling") or raw.get("rope_parameters") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"rope_scaling must be an object or null, got {params!r}")
    theta = raw.get("rope_theta", params.get("rope_theta"))
    if theta is None:
        raise ConfigError("config.json lacks required field 'rope_theta'")
    kind = params.get("type", params.get("rope_type", "default"))
    if kind == "default":
        return _number("rope_theta", theta), None
    if kind != "yarn":
        raise ConfigError(f"rope_scaling type {kind!r} is not supported; supported: 'yarn' or none")
    missing = [name for name in ("factor", "original_max_position_embeddings") if name not in params]
    if missing:
        raise ConfigError(f"rope_scaling (yarn) lacks required field {missing[0]!r}")
    if _number("rope_scaling.factor", params["factor"]) <= 0:
        raise ConfigError(f"rope_scaling.factor must be > 0, got {params['factor']!r}")
    original = params["original_max_position_embeddings"]
    _check_int("rope_scaling.original_max_position_embeddings", original, minimum=1)
    yarn = YarnScaling(
        factor=_number("rope_scaling.factor", params["factor"]),
        original_max_position_embeddings=original,
        beta_fast=_number("rope_scaling.beta_fast", params.get("beta_fast") or 32.0),
        beta_slow=_number("rope_scaling.beta_slow", params.get("beta_slow") or 1.0),
        mscale=_number("rope_scaling.mscale", params.get("mscale") or 1.0),
        mscale_all_dim=_number("rope_scaling.mscale_all_dim", params.get("mscale_all_dim") or 0.0),
    )
    return _number("rope_theta", theta), yarn


def _parse_quantization(raw: Any) -> Fp8BlockQuantization | None:
    if raw is None:
        return None
    method = raw.get("quant_method")
    if method != "fp8":
        raise ConfigError(f"quantization_config.quant_method {method!r} is not supported; supported: 'fp8'")
    for name, supported in (("fmt", "e4m3"), ("activation_scheme", "dynamic")):
        if raw.get(name, supported) != supported:
            raise ConfigError(
                f"quantization_config.{name} {raw.get(name)!r} is not supported; supported: {supported!r}"
            )
    block = raw.get("weight_block_size")
    if not (isinstance(block, list | tuple) and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise ConfigError(
            f"quantization_config.weight_block_size must be two positive integers, got {block!r}"
        )
    return Fp8BlockQuantization(weight_block_size=(block[0], block[1]))
