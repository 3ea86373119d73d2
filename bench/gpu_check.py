"""Issue 11's GPU figures in one run: kernels against their peers, decode and prefill of two large random models.

Every figure is measured in the same run, on the same device, next to what it is compared with:

- copy: a device-to-device copy, the HBM ceiling that the decode figures are a share of;
- block-fp8 GEMM TFLOP/s at K2's projection shapes: ours (`engine.kernels.fp8_linear.fp8_linear`, activation
  quantisation included) against bare block-wise `torch._scaled_mm` (activations quantised beforehand) and a
  bf16 matmul;
- fused MoE (`engine.kernels.fused_moe.fused_moe`) against the model's per-expert loop and grouped path at 64
  tokens, bf16 and block fp8;
- the MLA decode kernel (`engine.kernels.mla_decode`) against its torch reference, with the share of the copy
  bandwidth its cache reads reach;
- decode tok/s at batch 1, 8, 64 and 256 with the share of the HBM ceiling (weights and cache bytes read per
  step / step time / copy bandwidth), and prefill tok/s, in bf16 and block fp8, for a 2.2 B-parameter
  K2-shaped model and a Moonlight-16B-shaped one, each built on the device with random weights (never files).

Decode steps run as `engine.model_runner.ModelRunner` runs them (the flattened row, `PagedAttention` over a
`PagedLatentCache`, `lm_head` on each sequence's token), greedy. Each section is guarded: a missing kernel
prints `skipped: why`, an error prints `failed: ...`, and the run goes on; sections that would pass the time
budget are skipped. `--smoke` runs everything at tiny sizes on the CPU through the reference paths, so a test
proves the script works end to end without a GPU.
Run: `python bench/gpu_check.py [--smoke] [--budget-s 420] [--only gemm,moe,mla,models]` (copy always runs).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from engine.config import ModelConfig
from engine.cuda_graphs import DecodeGraphs
from engine.fp8 import FP8_DTYPE, quantize_activation_fp8, quantize_block_fp8
from engine.models.deepseek_v3 import DeepseekV3ForCausalLM, ModelOptions, MoE, MultiHeadLatentAttention
from engine.paged_cache import PagedAttention, PagedLatentCache, Piece
from engine.tiny_weights import INIT_STD, tiny_config

# K2's projections [N, K] (hidden 7168, 64 heads, q-LoRA 1536, latent 512 + rope 64, expert width 2048).
K2_GEMM_SHAPES = {
    "q_a_proj": (1536, 7168),
    "q_b_proj": (12288, 1536),
    "kv_a_proj_with_mqa": (576, 7168),
    "kv_b_proj": (32768, 512),
    "o_proj": (7168, 8192),
    "expert gate/up": (2048, 7168),
    "expert down": (7168, 2048),
    "dense gate/up": (18432, 7168),
    "dense down": (7168, 18432),
}
SMOKE_GEMM_SHAPES = {"small kv_a_proj": (144, 256), "small o_proj": (256, 512)}
GOALS = (
    ("2.2B batch-1 decode tok/s (bf16 or fp8)", "k2-2.2b decode b1 best tok/s", 450.0),
    ("Moonlight batch-1 decode share of HBM", "moonlight-16b decode b1 best hbm", 0.40),
    ("fp8 / bf16 decode speed, batch 1, 2.2B", "k2-2.2b decode b1 fp8/bf16", 1.6),
    ("fp8 / bf16 prefill speed, 2.2B", "k2-2.2b prefill fp8/bf16", 1.3),
    ("fp8 / bf16 decode speed, batch 1, Moonlight", "moonlight-16b decode b1 fp8/bf16", 1.6),
    ("fp8 / bf16 prefill speed, Moonlight", "moonlight-16b prefill fp8/bf16", 1.3),
    ("fused MoE / per-expert loop at batch 64 (bf16, 2.2B experts)", "moe k2-2.2b bf16 speedup", 2.0),
    ("fused MoE / per-expert loop at batch 64 (bf16, Moonlight experts)", "moe moonlight-16b bf16 speedup", 2.0),
)


def _large(**sizes: Any) -> dict[str, Any]:
    """A config.json dict with K2's vocabulary and special ids and these sizes."""
    return {**tiny_config("k2", vocab_size=163840), **sizes}


_ATTENTION = {"num_attention_heads": 16, "num_key_value_heads": 16, "kv_lora_rank": 512,
              "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}  # fmt: skip
MODEL_SHAPES = {
    # the issue's 2.2 B model: K2's layout (q-LoRA, YaRN, 1 shared expert) at hidden 2048, 8 layers, 32 experts
    "k2-2.2b": _large(
        hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1024, num_hidden_layers=8,
        first_k_dense_replace=1, q_lora_rank=1536, n_routed_experts=32, num_experts_per_tok=8, n_shared_experts=1,
        **_ATTENTION,
    ),
    # Moonlight-16B-A3B's published config.json (DESIGN.md quotes part of it)
    "moonlight-16b": _large(
        model_type="deepseek_v3", hidden_size=2048, intermediate_size=11264, moe_intermediate_size=1408,
        num_hidden_layers=27, first_k_dense_replace=1, q_lora_rank=None, n_routed_experts=64, num_experts_per_tok=6,
        n_shared_experts=2, routed_scaling_factor=2.446, rope_scaling=None, rms_norm_eps=1e-5, **_ATTENTION,
    ),
}  # fmt: skip
SMOKE_MODEL_SHAPES = {"k2-2.2b": tiny_config("k2"), "moonlight-16b": tiny_config("moonlight")}
"""The tiny presets under the large models' names, so a smoke run fills in every figure the goals read."""
DECODE_BLOCK_SIZE = 16


def fill_random(module: nn.Module) -> None:
    """Fill a module built on its device at a trained model's scale (as `engine.tiny_weights` does):
    weights N(0, 0.02), norms near 1, router bias near 0; block-fp8 weights as values of std 64 with
    scale 0.02 / 64, so they dequantise to the same N(0, 0.02) without an fp32 copy of the model."""
    torch.manual_seed(0)
    for name, param in module.named_parameters():
        if param.dtype == FP8_DTYPE:
            param.copy_((torch.randn(param.shape, device=param.device) * 64).clamp(-448, 448).to(FP8_DTYPE))
        elif name.endswith("weight_scale_inv"):
            param.fill_(INIT_STD / 64)
        elif name.endswith("norm.weight"):
            param.normal_(1.0, INIT_STD)
        elif name.endswith("e_score_correction_bias"):
            param.normal_(0.0, 0.01)
        else:
            param.normal_(0.0, INIT_STD)


def _paged(model: DeepseekV3ForCausalLM, batch: int, tokens: int) -> tuple[PagedLatentCache, list[list[int]]]:
    """A random cache and block tables for `batch` sequences of `tokens`, blocks scattered over the pool."""
    per_seq = -(-tokens // DECODE_BLOCK_SIZE)
    device = model.lm_head.weight.device
    cache = PagedLatentCache(model.config, batch * per_seq, DECODE_BLOCK_SIZE, dtype=torch.bfloat16, device=device)
    cache.latent.normal_()
    cache.k_rope.normal_()
    order = torch.randperm(batch * per_seq).tolist()
    return cache, [order[b * per_seq : (b + 1) * per_seq] for b in range(batch)]


def _forward(model: DeepseekV3ForCausalLM, cache: PagedLatentCache, pieces: list[Piece]) -> torch.Tensor:
    """One pass as `ModelRunner.run` makes it: the pieces flattened into one row, greedy next tokens."""
    device = cache.device
    ids = torch.randint(0, model.config.vocab_size, (1, sum(p.count for p in pieces)), device=device)
    positions = torch.tensor([[t for p in pieces for t in range(p.start, p.start + p.count)]], device=device)
    hidden = model.model(ids, positions, PagedAttention.for_pieces(cache, pieces))  # [1, N, D]
    ends = torch.tensor(list(itertools.accumulate(p.count for p in pieces)), device=device) - 1
    tokens: torch.Tensor = model.lm_head(hidden[0, ends]).argmax(dim=-1)
    return tokens


def decode_step_seconds(
    check: Check, model: DeepseekV3ForCausalLM, batch: int, context: int
) -> tuple[float, float | None]:
    """One decode step of `batch` sequences that each hold `context` cached tokens: run eagerly, and replayed
    from a CUDA graph as the engine does on a GPU (None on the CPU)."""
    cache, tables = _paged(model, batch, context + 1)
    pieces = [Piece(table, context, 1) for table in tables]
    calls = 1 if check.smoke else 5
    eager = check.seconds(_forward, model, cache, pieces, calls=calls)
    if check.device.type != "cuda":
        return eager, None
    graphs = DecodeGraphs(model, cache, max_batch=batch, max_model_len=context + 1)
    return eager, check.seconds(graphs.logits, [1] * batch, [context] * batch, tables, calls=calls)


def prefill_seconds(check: Check, model: DeepseekV3ForCausalLM, tokens: int) -> float:
    cache, tables = _paged(model, 1, tokens)
    return check.seconds(_forward, model, cache, [Piece(tables[0], 0, tokens)], calls=1)


def decode_bytes_per_step(model: DeepseekV3ForCausalLM, batch: int, context: int) -> float:
    """Bytes a decode step must read: every weight but the embedding (one row per token) and the routed
    experts (those some token picks: a share 1 - (1 - K/E)^batch of them under the random models' near-uniform
    routing), plus each sequence's cached latent and roped key in every layer."""
    config = model.config
    fixed = routed = 0.0
    for name, param in model.named_parameters():
        size = param.numel() * param.element_size()
        if name.endswith("embed_tokens.weight") and not config.tie_word_embeddings:
            fixed += batch * param.shape[1] * param.element_size()
        elif ".mlp.experts." in name:
            routed += size
        else:
            fixed += size
    picked = 1 - (1 - config.num_experts_per_tok / config.n_routed_experts) ** batch
    cache = batch * (context + 1) * (config.kv_lora_rank + config.qk_rope_head_dim) * 2 * config.num_hidden_layers
    return fixed + routed * picked + cache


class Skip(Exception):
    """A section cannot run here; the message says why."""


class Check:
    """Runs the sections in order under one time budget and keeps the figures the goals are read from."""

    def __init__(self, device: torch.device, smoke: bool, budget_s: float) -> None:
        self.device, self.smoke = device, smoke
        self.deadline = time.monotonic() + budget_s
        self.figures: dict[str, float] = {}
        self.copy_bytes_per_s = float("nan")

    def section(self, title: str, run: Callable[[], None]) -> None:
        print(f"\n== {title} ==", flush=True)
        try:
            self.require_time()
            run()
        except Skip as why:
            print(f"skipped: {why}", flush=True)
        except Exception as error:  # one broken section must not hide the figures of the others
            print(f"failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def require_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise Skip("time budget spent")

    def seconds(self, run: Callable[..., Any], *args: Any, calls: int | None = None, **kwargs: Any) -> float:
        """Best time of one `run(*args, **kwargs)`, over rounds of `calls` back-to-back calls after a warm-up."""
        calls = calls or (1 if self.smoke else 10)
        run(*args, **kwargs)
        self.sync()
        best = float("inf")
        for _ in range(1 if self.smoke else 3):
            start = time.perf_counter()
            for _ in range(calls):
                run(*args, **kwargs)
            self.sync()
            best = min(best, (time.perf_counter() - start) / calls)
        return best

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def optional(module: str, name: str) -> Any:
    """A kernel entry point that another piece of work provides, or Skip naming what is missing."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError as error:
        raise Skip(f"{module} cannot be imported ({error})") from error
    if found is None:
        raise Skip(f"{module}.{name} does not exist")
    return found


# ---- sections -----------------------------------------------------------------------------------------


def copy_bandwidth(check: Check) -> None:
    size = (8 if check.smoke else 4096) * 2**20
    src = torch.empty(size, dtype=torch.uint8, device=check.device).random_(0, 255)
    dst = torch.empty_like(src)
    seconds = check.seconds(dst.copy_, src)
    check.copy_bytes_per_s = 2 * size / seconds  # read + write
    check.figures["copy GB/s"] = check.copy_bytes_per_s / 1e9
    print(f"copy of {size / 2**20:.0f} MiB: {check.copy_bytes_per_s / 1e9:,.0f} GB/s (read + write)")


def gemm(check: Check) -> None:
    shapes = SMOKE_GEMM_SHAPES if check.smoke else K2_GEMM_SHAPES
    try:
        ours = optional("engine.kernels.fp8_linear", "fp8_linear")
    except Skip as why:
        print(f"ours skipped: {why}")
        ours = None
    print(f"{'shape [N, K]':34} {'M':>5} {'ours':>8} {'_scaled_mm':>10} {'bf16':>8}  TFLOP/s")
    for m in (16, 64) if check.smoke else (64, 4096):
        for name, (n, k) in shapes.items():
            check.require_time()
            x = (torch.randn(m, k, device=check.device) * 0.5).bfloat16()
            w_fp8, w_scale = quantize_block_fp8(torch.randn(n, k, device=check.device) * 0.02)
            w_bf16 = (torch.randn(n, k, device=check.device) * 0.02).bfloat16()
            flop = 2 * m * n * k
            cells = [
                _tflops(flop, check.seconds(ours, x, w_fp8, w_scale, (128, 128))) if ours else "-",
                _scaled_mm_tflops(check, x, w_fp8, w_scale, flop),
                _tflops(flop, check.seconds(torch.matmul, x, w_bf16.T)),
            ]
            print(f"{name + f' [{n}, {k}]':34} {m:>5} {cells[0]:>8} {cells[1]:>10} {cells[2]:>8}", flush=True)


def _tflops(flop: int, seconds: float) -> str:
    return f"{flop / seconds / 1e12:,.1f}"


def _scaled_mm_tflops(check: Check, x: torch.Tensor, w_fp8: torch.Tensor, w_scale: torch.Tensor, flop: int) -> str:
    """Block-wise `torch._scaled_mm` alone: 1 x 128 activation scales column-major, 128 x 128 weight scales."""
    if check.device.type != "cuda":
        return "no GPU"
    if w_fp8.shape[0] % 128 or x.shape[1] % 512:
        return "shape"  # cuBLAS wants whole blocks of N and 16-byte-aligned scale rows
    x_fp8, x_scale = quantize_activation_fp8(x)
    x_scale = x_scale.t().contiguous().t()  # strides (1, M)
    scale_b = w_scale.contiguous().t()
    try:
        seconds = check.seconds(torch._scaled_mm, x_fp8, w_fp8.t(), scale_a=x_scale, scale_b=scale_b, out_dtype=x.dtype)
        return _tflops(flop, seconds)
    except (RuntimeError, NotImplementedError) as error:
        return f"error: {str(error).splitlines()[0][:40]}"


def fused_moe(check: Check) -> None:
    fused = optional("engine.kernels.fused_moe", "fused_moe")
    stack = optional("engine.kernels.fused_moe", "stack_experts")
    tokens = 8 if check.smoke else 64
    for model_name, raw in (SMOKE_MODEL_SHAPES if check.smoke else MODEL_SHAPES).items():
        config = ModelConfig.from_hf(raw)
        for label, block in (("bf16", None), ("fp8", (128, 128))):
            check.require_time()
            options = ModelOptions(dtype=torch.bfloat16, fp8_block=block)
            moe = MoE(config, options, check.device)
            fill_random(moe)
            x = (torch.randn(tokens, config.hidden_size, device=check.device) * 0.5).bfloat16()
            weights, indices = moe.gate(x)
            stacked = stack(moe.experts)
            times = {  # the model's own two torch paths, then the kernel
                "per-expert loop": check.seconds(moe._loop, x, weights, indices),
                "grouped torch": check.seconds(moe._grouped, x, weights, indices),
                "fused": check.seconds(fused, x, weights, indices, stacked),
            }
            speedup = times["per-expert loop"] / times["fused"]
            check.figures[f"moe {model_name} {label} speedup"] = speedup
            row = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in times.items())
            print(f"{model_name} experts, {tokens} tokens, {label}: {row}; loop / fused {speedup:.2f}x", flush=True)


def mla_decode(check: Check) -> None:
    module = optional("engine.kernels.mla_decode", "mla_decode")
    reference = optional("engine.kernels.mla_decode", "mla_decode_reference")
    path = "Triton" if optional("engine.kernels.select", "use_kernels")(check.device) else "reference path"
    heads, rank, rope, block_size = (4, 64, 16, 16) if check.smoke else (16, 512, 64, 64)
    context = 64 if check.smoke else 4096
    for batch in (1, 8) if check.smoke else (1, 8, 64, 256):
        check.require_time()
        blocks_per_seq = -(-context // block_size)
        order = torch.randperm(batch * blocks_per_seq, device=check.device).int()
        tables = order.view(batch, blocks_per_seq)
        lens = torch.full((batch,), context, dtype=torch.int32, device=check.device)
        slots = batch * blocks_per_seq * block_size
        latent = torch.randn(slots, rank, device=check.device).bfloat16()
        k_rope = torch.randn(slots, rope, device=check.device).bfloat16()
        q_latent = torch.randn(batch, heads, rank, device=check.device).bfloat16()
        q_pe = torch.randn(batch, heads, rope, device=check.device).bfloat16()
        args = (q_latent, q_pe, latent, k_rope, tables, lens, block_size, 0.07)
        kernel_s, reference_s = check.seconds(module, *args), check.seconds(reference, *args)
        read = batch * context * (rank + rope) * 2
        share = read / kernel_s / check.copy_bytes_per_s
        print(
            f"batch {batch:>3} x {context} tokens, {heads} heads: mla_decode ({path}) {kernel_s * 1e6:,.0f} us "
            f"({share:.0%} of copy bandwidth), torch reference {reference_s * 1e6:,.0f} us",
            flush=True,
        )


def prefill_attention(check: Check) -> None:
    """The prefill path picks SDPA over keys decompressed per head; this checks it beats the absorbed form."""
    tokens = 32 if check.smoke else 4096
    for model_name, raw in (SMOKE_MODEL_SHAPES if check.smoke else MODEL_SHAPES).items():
        check.require_time()
        config = ModelConfig.from_hf(raw)
        layer = MultiHeadLatentAttention(config, 0, ModelOptions(dtype=torch.bfloat16), check.device)
        fill_random(layer)
        heads, rope = config.num_attention_heads, config.qk_rope_head_dim
        q_nope = torch.randn(1, tokens, heads, config.qk_nope_head_dim, device=check.device).bfloat16()
        q_pe = torch.randn(1, tokens, heads, rope, device=check.device).bfloat16()
        latent = torch.randn(1, tokens, config.kv_lora_rank, device=check.device).bfloat16()
        k_pe = torch.randn(1, tokens, rope, device=check.device).bfloat16()
        causal = torch.ones(tokens, tokens, dtype=torch.bool, device=check.device).tril()[None]
        sdpa = check.seconds(layer.attend_with_sdpa, q_nope, q_pe, latent, k_pe, causal)
        absorbed = check.seconds(layer.attend_over, q_nope, q_pe, latent, k_pe, causal)
        check.figures[f"{model_name} prefill attention sdpa/absorbed"] = absorbed / sdpa
        print(f"{model_name}, one layer over {tokens} tokens: SDPA {sdpa * 1e3:.2f} ms, "
              f"absorbed {absorbed * 1e3:.2f} ms ({absorbed / sdpa:.2f}x)", flush=True)


def models(check: Check) -> None:
    shapes = SMOKE_MODEL_SHAPES if check.smoke else MODEL_SHAPES
    batches = (1, 2) if check.smoke else (1, 8, 64, 256)
    context, prefill = (16, 32) if check.smoke else (1024, 4096)
    for model_name, raw in shapes.items():
        config = ModelConfig.from_hf(raw)
        rates: dict[str, dict[str, float]] = {}
        for label, block in (("bf16", None), ("fp8", (128, 128))):
            check.require_time()
            options = ModelOptions(dtype=torch.bfloat16, fp8_block=block)
            model = DeepseekV3ForCausalLM(config, options, check.device).eval()
            fill_random(model)
            params_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
            print(f"{model_name} {label}: {params_gb:.3g} GB of parameters", flush=True)
            rates[label] = {}
            for batch in batches:
                check.require_time()
                eager_s, graph_s = decode_step_seconds(check, model, batch, context)
                step_s = graph_s or eager_s
                read = decode_bytes_per_step(model, batch, context)
                share = read / step_s / check.copy_bytes_per_s
                rates[label][f"decode b{batch}"] = batch / step_s
                for figure, value in (("hbm", share), ("tok/s", batch / step_s)):
                    key = f"{model_name} decode b{batch} best {figure}"
                    check.figures[key] = max(check.figures.get(key, 0.0), value)
                print(
                    f"  decode batch {batch:>3}, context {context}: {batch / step_s:,.0f} tok/s, "
                    f"{step_s * 1e3:.2f} ms/step ({eager_s * 1e3:.2f} without CUDA graphs), "
                    f"{read / 1e9:.3g} GB read/step, {share:.0%} of copy bandwidth",
                    flush=True,
                )
            check.require_time()
            rates[label]["prefill"] = prefill / prefill_seconds(check, model, prefill)
            print(f"  prefill of {prefill} tokens: {rates[label]['prefill']:,.0f} tok/s", flush=True)
            del model
            if check.device.type == "cuda":
                torch.cuda.empty_cache()
        for what in rates.get("fp8", {}):
            ratio = rates["fp8"][what] / rates["bf16"][what]
            check.figures[f"{model_name} {what} fp8/bf16"] = ratio
            print(f"  fp8 / bf16, {what}: {ratio:.2f}x")


def goals(check: Check) -> None:
    for text, key, target in GOALS:
        value = check.figures.get(key)
        verdict = "not measured" if value is None else ("met" if value >= target else "not met")
        shown = "-" if value is None else f"{value:,.2f}"
        print(f"{text}: {shown} (goal >= {target:g}) {verdict}")


SECTIONS: dict[str, tuple[str, Callable[[Check], None]]] = {
    "copy": ("device-to-device copy bandwidth", copy_bandwidth),
    "gemm": ("block-fp8 GEMM at K2's shapes", gemm),
    "moe": ("fused MoE against the per-expert loop", fused_moe),
    "mla": ("MLA decode over the paged cache", mla_decode),
    "prefill": ("prefill attention: SDPA against the absorbed form", prefill_attention),
    "models": ("decode and prefill of large random models", models),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, reference paths")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip sections started after this")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (copy always runs)")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        parser.error("no CUDA device: run with --smoke for the CPU check")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check on {name}, torch {torch.__version__}, budget {args.budget_s:.0f} s", flush=True)
    check = Check(device, args.smoke, args.budget_s)
    started = time.monotonic()
    with torch.inference_mode():
        for key in ["copy", *(key for key in args.only.split(",") if key != "copy")]:
            if key not in SECTIONS:
                parser.error(f"unknown section {key!r}; sections: {', '.join(SECTIONS)}")
            title, run = SECTIONS[key]
            check.section(title, lambda run=run: run(check))  # type: ignore[misc]
    print("\n== goals (issue 11) ==")
    goals(check)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
