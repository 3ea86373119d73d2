"""The safetensors loader on real checkpoint files written by `engine.tiny_weights` and by transformers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.fp8 import FP8_DTYPE
from engine.loader import CheckpointError, checkpoint_weight_map, load_config, load_model
from engine.tiny_tokenizer import TINY_VOCAB_SIZE
from engine.tiny_weights import PRESETS, TinyCheckpointError, write_tiny_checkpoint
from tests.engine.conftest import hf_config

VOCAB = 512


def _rewrite(root: Path, edit: dict[str, torch.Tensor | None]) -> None:
    """Replace (tensor) or drop (None) tensors of a single-file checkpoint."""
    tensors = load_file(root / "model.safetensors")
    for name, value in edit.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    save_file(tensors, root / "model.safetensors")


def _logits(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(seed))
    return model(ids, torch.arange(16).expand(2, 16))


def test_single_file_and_sharded_checkpoints_load_identically(tmp_path: Path) -> None:
    single = write_tiny_checkpoint(tmp_path / "one", "k2", dtype="bf16", vocab_size=VOCAB)
    sharded = write_tiny_checkpoint(tmp_path / "four", "k2", dtype="bf16", shards=4, vocab_size=VOCAB)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 4
    a = load_model(single, dtype=torch.float32).state_dict()
    b = load_model(sharded, dtype=torch.float32).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)
    with safe_open(single / "model.safetensors", framework="pt") as handle:
        for name in ("model.layers.2.mlp.experts.7.down_proj.weight", "model.norm.weight", "lm_head.weight"):
            assert torch.equal(a[name], handle.get_tensor(name).float())


def test_dtypes_follow_the_request_but_the_router_stays_fp32(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(tmp_path, "moonlight", dtype="bf16", vocab_size=VOCAB)
    model = load_model(root, dtype=torch.bfloat16, attention="plain", moe="loop")
    params = dict(model.named_parameters())
    assert params["model.layers.1.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert params["model.layers.1.mlp.gate.weight"].dtype == torch.float32
    assert params["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32
    assert model.options.attention == "plain" and model.options.moe == "loop"
    logits = _logits(model)
    assert logits.dtype == torch.float32 and logits.shape == (2, 16, VOCAB)
    assert bool(torch.isfinite(logits).all())


def _dequantised_copy_for_transformers(fp8_root: Path, out: Path, num_layers: int) -> None:
    """The fp8 checkpoint's weights dequantised by block expansion, MTP layers dropped, as fp32 files."""
    tensors: dict[str, torch.Tensor] = {}
    weight_map = checkpoint_weight_map(fp8_root)
    for name, file in weight_map.items():
        if name.endswith("_scale_inv") or name.startswith(f"model.layers.{num_layers}."):
            continue
        with safe_open(fp8_root / file, framework="pt") as handle:
            tensor = handle.get_tensor(name).float()
        if name + "_scale_inv" in weight_map:
            with safe_open(fp8_root / weight_map[name + "_scale_inv"], framework="pt") as handle:
                scale = handle.get_tensor(name + "_scale_inv")
            expanded = scale.repeat_interleave(128, 0).repeat_interleave(128, 1)
            tensor = tensor * expanded[: tensor.shape[0], : tensor.shape[1]]
        tensors[name] = tensor
    out.mkdir()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("preset", ["k2", "deepseek_v3"])
def test_fp8_checkpoint_matches_transformers_on_dequantised_weights(tmp_path: Path, preset: str) -> None:
    from transformers import DeepseekV3ForCausalLM

    root = write_tiny_checkpoint(tmp_path / "fp8", preset, dtype="fp8", shards=3, vocab_size=VOCAB)
    config = json.loads((root / "config.json").read_text())
    _dequantised_copy_for_transformers(root, tmp_path / "hf", config["num_hidden_layers"])
    hf_config(config).save_pretrained(tmp_path / "hf")
    reference = DeepseekV3ForCausalLM.from_pretrained(
        tmp_path / "hf", dtype=torch.float32, attn_implementation="eager"
    )
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.eval()(input_ids=ids).logits
    ours = _logits(load_model(root, dtype=torch.float32))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)  # measured <= 1e-6


def test_keep_fp8_keeps_block_weights_and_gives_the_dequantised_logits(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(tmp_path, "deepseek_v3", dtype="fp8", shards=2, vocab_size=VOCAB)
    kept = load_model(root, dtype=torch.float32, keep_fp8=True)
    params = dict(kept.named_parameters())
    kv_a = "model.layers.0.self_attn.kv_a_proj_with_mqa"
    assert params[kv_a + ".weight"].dtype == FP8_DTYPE
    assert params[kv_a + ".weight_scale_inv"].shape == (1, 1)  # 80 x 112: one ragged block
    assert params["model.layers.0.mlp.gate_proj.weight_scale_inv"].shape == (3, 1)  # 304 x 112
    assert params["model.layers.2.mlp.gate.weight"].dtype == torch.float32
    assert params["lm_head.weight"].dtype == torch.float32
    for attention in ("plain", "absorbed"):
        dequantised = load_model(root, dtype=torch.float32, attention=attention)
        kept = load_model(root, dtype=torch.float32, keep_fp8=True, attention=attention)
        assert torch.equal(_logits(kept), _logits(dequantised))


def test_mtp_layers_and_rotary_tables_are_skipped(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(tmp_path, "deepseek_v3", dtype="bf16", vocab_size=VOCAB)
    assert load_config(root).num_nextn_predict_layers == 1
    _rewrite(root, {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)})
    names = checkpoint_weight_map(root)
    assert "model.layers.4.eh_proj.weight" in names and "model.layers.4.self_attn.kv_b_proj.weight" in names
    model = load_model(root, dtype=torch.float32)
    assert not any(name.startswith("model.layers.4.") for name in model.state_dict())


def test_tied_embeddings_share_the_embedding_matrix(tmp_path: Path) -> None:
    raw = {**PRESETS["moonlight"], "tie_word_embeddings": True}
    root = write_tiny_checkpoint(tmp_path, raw, dtype="fp32", vocab_size=VOCAB)
    assert "lm_head.weight" not in checkpoint_weight_map(root)
    model = load_model(root, dtype=torch.float32)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_tied_checkpoint_may_ship_its_head_but_only_as_a_copy_of_the_embedding(tmp_path: Path) -> None:
    raw = {**PRESETS["moonlight"], "tie_word_embeddings": True}
    root = write_tiny_checkpoint(tmp_path, raw, dtype="fp32", vocab_size=VOCAB)
    plain = _logits(load_model(root, dtype=torch.float32))
    embedding = load_file(root / "model.safetensors")["model.embed_tokens.weight"]
    _rewrite(root, {"lm_head.weight": embedding.clone()})
    model = load_model(root, dtype=torch.float32)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(_logits(model), plain)
    _rewrite(root, {"lm_head.weight": embedding + 1e-3})
    with pytest.raises(CheckpointError, match=r"'lm_head\.weight' in .*model\.safetensors differs from "
                                              r"'model\.embed_tokens\.weight', but config\.json sets tie"):
        load_model(root, dtype=torch.float32)


@pytest.fixture
def bf16_root(tmp_path: Path) -> Path:
    return write_tiny_checkpoint(tmp_path / "ckpt", "k2", dtype="bf16", vocab_size=VOCAB)


def test_missing_tensor_is_named(bf16_root: Path) -> None:
    _rewrite(bf16_root, {"model.layers.1.mlp.experts.3.up_proj.weight": None})
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight' missing"):
        load_model(bf16_root)


def test_misshaped_tensor_is_named_with_its_file_and_shapes(bf16_root: Path) -> None:
    _rewrite(bf16_root, {"model.layers.0.self_attn.kv_b_proj.weight": torch.zeros(10, 64, dtype=torch.bfloat16)})
    with pytest.raises(CheckpointError, match=r"kv_b_proj\.weight' in .*model\.safetensors has shape \(10, 64\), "
                                              r"expected \(256, 64\)"):
        load_model(bf16_root)


def test_unexpected_tensor_is_named(bf16_root: Path) -> None:
    _rewrite(bf16_root, {"model.layers.0.self_attn.q_norm.weight": torch.ones(4)})
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model\.layers\.0\.self_attn\.q_norm\.weight' in"):
        load_model(bf16_root)


def test_index_naming_a_missing_shard(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(tmp_path, "k2", dtype="bf16", shards=3, vocab_size=VOCAB)
    (root / "model-00002-of-00003.safetensors").unlink()
    message = "names shard 'model-00002-of-00003.safetensors', which is not in"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_model(root)


def test_directory_without_weights_or_with_a_broken_index(bf16_root: Path) -> None:
    (bf16_root / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=re.escape("neither model.safetensors.index.json nor model.safetensors")):
        load_model(bf16_root)
    (bf16_root / "model.safetensors.index.json").write_text('{"shards": []}')
    with pytest.raises(CheckpointError, match="not a safetensors index with a weight_map"):
        load_model(bf16_root)


def test_fp8_weight_without_its_scale(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(tmp_path, "k2", dtype="fp8", vocab_size=VOCAB)
    _rewrite(root, {"model.layers.0.self_attn.o_proj.weight_scale_inv": None})
    with pytest.raises(CheckpointError, match=r"needs 'model\.layers\.0\.self_attn\.o_proj\.weight_scale_inv'"):
        load_model(root)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.self_attn\.o_proj\.weight_scale_inv' missing"):
        load_model(root, keep_fp8=True)


def test_fp8_scale_of_the_wrong_grid(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(tmp_path, "k2", dtype="fp8", vocab_size=VOCAB)
    _rewrite(root, {"model.layers.0.mlp.up_proj.weight_scale_inv": torch.ones(2, 1)})  # 352 rows need 3
    with pytest.raises(CheckpointError, match=r"up_proj\.weight_scale_inv' in .*needs scale_inv \(3, 1\)"):
        load_model(root)


def test_keep_fp8_needs_an_fp8_checkpoint(bf16_root: Path) -> None:
    with pytest.raises(CheckpointError, match="keep_fp8 needs a block-fp8 checkpoint"):
        load_model(bf16_root, keep_fp8=True)


def test_keep_fp8_rejects_a_projection_stored_in_bf16(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(tmp_path, "k2", dtype="fp8", vocab_size=VOCAB)
    name = "model.layers.1.mlp.shared_experts.down_proj.weight"
    _rewrite(root, {name: torch.zeros(128, 48, dtype=torch.bfloat16), name + "_scale_inv": None})
    with pytest.raises(CheckpointError, match=r"down_proj\.weight' in .* is torch\.bfloat16, expected block fp8"):
        load_model(root, keep_fp8=True)
    assert bool(torch.isfinite(_logits(load_model(root, dtype=torch.float32))).all())  # dense load accepts it


def test_tiny_checkpoint_files(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(tmp_path, "deepseek_v3", dtype="fp8")
    config = json.loads((root / "config.json").read_text())
    assert config["quantization_config"]["weight_block_size"] == [128, 128]
    assert config["vocab_size"] == TINY_VOCAB_SIZE and config["eos_token_id"] == TINY_VOCAB_SIZE - 255
    with safe_open(root / "model.safetensors", framework="pt") as handle:
        names = set(handle.keys())
        assert handle.get_tensor("model.layers.3.mlp.experts.0.up_proj.weight").dtype == FP8_DTYPE
        assert handle.get_tensor("model.layers.3.mlp.experts.0.up_proj.weight_scale_inv").shape == (1, 1)
        assert handle.get_tensor("model.layers.0.mlp.down_proj.weight_scale_inv").shape == (1, 3)  # 112 x 304
        assert handle.get_tensor("model.layers.3.mlp.gate.weight").dtype == torch.bfloat16
        assert handle.get_tensor("model.layers.3.mlp.gate.e_score_correction_bias").dtype == torch.float32
        assert handle.get_tensor("lm_head.weight").dtype == torch.bfloat16
    model_names = set(load_model(root, keep_fp8=True).state_dict())
    assert model_names == {n for n in names if not n.startswith("model.layers.4.")}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"config": "llama"}, "unknown preset 'llama'"), ({"dtype": "int4"}, "dtype must be"),
     ({"shards": 0}, "shards must be >= 1"), ({"shards": 10_000}, r"shards \(10000\) exceeds the")],
)
def test_tiny_checkpoint_rejects_bad_requests(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TinyCheckpointError, match=message):
        write_tiny_checkpoint(tmp_path, **{"config": "k2", **kwargs})  # type: ignore[arg-type]
