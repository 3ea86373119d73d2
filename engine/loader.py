"""Load a safetensors checkpoint (one file or sharded, bf16/fp16/fp32 or block fp8) into the model.

Files are memory-mapped with `safe_open` and copied tensor by tensor into parameters allocated once, so the
checkpoint is never held twice. Block-fp8 weights are either kept with their scales (`keep_fp8`: half of
bf16's memory, each weight dequantised whenever it is used) or dequantised once into the requested dtype,
with the block size from `quantization_config` (not inferred from the scale grid, which gets ragged edges
wrong). Multi-token-prediction layers and rotary buffers that some checkpoints carry are skipped, and so is
the `lm_head.weight` of a tied checkpoint once it is found equal to the embedding; anything else missing,
unexpected, mis-shaped or contradictory is an error naming the tensor and its file.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from engine.config import ModelConfig, read_config_file
from engine.errors import CheckpointError
from engine.fp8 import FP8_DTYPE, dequantize_block_fp8
from engine.models.deepseek_v3 import AttentionForm, DeepseekV3ForCausalLM, ModelOptions, MoeForm

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SCALE_SUFFIX = "_scale_inv"
TIED_HEAD, TIED_EMBEDDING = "lm_head.weight", "model.embed_tokens.weight"
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def load_config(path: str | Path) -> ModelConfig:
    """The `ModelConfig` of a checkpoint directory."""
    return read_config_file(path)


def load_model(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    keep_fp8: bool = False,
    attention: AttentionForm = "absorbed",
    moe: MoeForm = "grouped",
) -> DeepseekV3ForCausalLM:
    """Build the model for the checkpoint at `path` and fill every parameter from its files."""
    root = Path(path)
    config = load_config(root)
    if keep_fp8 and config.quantization is None:
        raise CheckpointError(f"keep_fp8 needs a block-fp8 checkpoint; {root} has no quantization_config")
    block = config.quantization.weight_block_size if config.quantization else None
    options = ModelOptions(dtype=dtype, attention=attention, moe=moe, fp8_block=block if keep_fp8 else None)
    model = DeepseekV3ForCausalLM(config, options, device=device)
    weight_map = checkpoint_weight_map(root)
    _fill(model, root, weight_map, block)
    return model.eval()


def checkpoint_weight_map(root: Path) -> dict[str, str]:
    """Tensor name -> file name, from the shard index or the single file."""
    index = root / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index} is not a safetensors index with a weight_map: {err}") from err
        for file in sorted(set(weight_map.values())):
            if not (root / file).is_file():
                raise CheckpointError(f"{index} names shard {file!r}, which is not in {root}")
        return dict(weight_map)
    single = root / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{root} has neither {INDEX_FILE} nor {SINGLE_FILE}")
    with safe_open(single, framework="pt") as handle:
        return dict.fromkeys(handle.keys(), SINGLE_FILE)


def _skipped(name: str, config: ModelConfig) -> bool:
    """Multi-token-prediction layers (index >= num_hidden_layers) and cached rotary tables."""
    if name.endswith("rotary_emb.inv_freq"):
        return True
    match = _LAYER.match(name)
    return match is not None and int(match.group(1)) >= config.num_hidden_layers


class _Shards:
    """Open safetensors handles by file name, opened on first use and closed together."""

    def __init__(self, root: Path, weight_map: dict[str, str], stack: ExitStack):
        self.root, self.weight_map, self.stack = root, weight_map, stack
        self.handles: dict[str, Any] = {}

    def get(self, name: str) -> torch.Tensor:
        file = self.weight_map[name]
        if file not in self.handles:
            self.handles[file] = self.stack.enter_context(safe_open(self.root / file, framework="pt"))
        return self.handles[file].get_tensor(name)

    def where(self, name: str) -> str:
        return str(self.root / self.weight_map[name])


def _fill(model: DeepseekV3ForCausalLM, root: Path, weight_map: dict[str, str], block: tuple[int, int] | None) -> None:
    config = model.config
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = set(params)
    if config.tie_word_embeddings:
        expected.discard(TIED_HEAD)  # shares model.embed_tokens.weight
    loaded: set[str] = set()
    with ExitStack() as stack:
        shards = _Shards(root, weight_map, stack)
        for name in weight_map:
            if _skipped(name, config):
                continue
            if name.endswith(SCALE_SUFFIX) and name not in expected and name.removesuffix(SCALE_SUFFIX) in weight_map:
                continue  # the scale of a weight held dense: used when that weight is dequantised
            if name == TIED_HEAD and config.tie_word_embeddings:
                continue  # compared with the embedding once that is loaded
            if name not in expected:
                raise CheckpointError(f"unexpected tensor {name!r} in {shards.where(name)}")
            _copy(name, _prepared(name, shards, params[name], block), params[name], shards.where(name))
            loaded.add(name)
        if config.tie_word_embeddings and TIED_HEAD in weight_map and TIED_EMBEDDING in loaded:
            _check_tied_head(shards, params[TIED_EMBEDDING], block)
    missing = sorted(expected - loaded)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"tensor {missing[0]!r}{more} missing from the checkpoint in {root}")


def _check_tied_head(shards: _Shards, embedding: torch.Tensor, block: tuple[int, int] | None) -> None:
    """A tied checkpoint may ship its head too; one that differs from the embedding contradicts the config,
    and either choice would give some logits other than the ones it was trained with."""
    head = _prepared(TIED_HEAD, shards, embedding, block)
    _check_shape(TIED_HEAD, head, embedding, shards.where(TIED_HEAD))
    if not torch.equal(head.to(embedding.dtype), embedding):
        raise CheckpointError(
            f"tensor {TIED_HEAD!r} in {shards.where(TIED_HEAD)} differs from {TIED_EMBEDDING!r}, "
            "but config.json sets tie_word_embeddings"
        )


def _prepared(name: str, shards: _Shards, param: torch.Tensor, block: tuple[int, int] | None) -> torch.Tensor:
    """The checkpoint tensor for `param`: as stored, or dequantised when fp8 is stored but not kept."""
    tensor = shards.get(name)
    stored_fp8, kept_fp8 = tensor.dtype == FP8_DTYPE, param.dtype == FP8_DTYPE
    if stored_fp8 == kept_fp8 or not stored_fp8:
        if kept_fp8 and not stored_fp8:
            raise CheckpointError(f"tensor {name!r} in {shards.where(name)} is {tensor.dtype}, expected block fp8")
        return tensor
    scale_name = name + SCALE_SUFFIX
    if block is None or scale_name not in shards.weight_map:
        raise CheckpointError(
            f"fp8 tensor {name!r} in {shards.where(name)} needs {scale_name!r} and a quantization_config"
        )
    _check_shape(name, tensor, param, shards.where(name))
    try:
        return dequantize_block_fp8(tensor, shards.get(scale_name), block, dtype=param.dtype)
    except ValueError as err:
        raise CheckpointError(f"tensor {scale_name!r} in {shards.where(scale_name)}: {err}") from err


def _check_shape(name: str, tensor: torch.Tensor, param: torch.Tensor, where: str) -> None:
    if tensor.shape != param.shape:
        shapes = f"has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}"
        raise CheckpointError(f"tensor {name!r} in {where} {shapes}")


def _copy(name: str, tensor: torch.Tensor, param: torch.Tensor, where: str) -> None:
    _check_shape(name, tensor, param, where)
    with torch.no_grad():
        param.copy_(tensor)
