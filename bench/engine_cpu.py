"""Decode speed on CPU: kcode's engine next to transformers' `generate`, same checkpoint, same prompt, one run.

A K2-shaped random checkpoint (MLA with q/kv LoRA and YaRN, 1 dense + 5 MoE layers of 32 routed experts,
4 per token, 1 shared) is written with `engine.tiny.make_tiny`; both engines load those same files. Each
generates greedily with eos ignored (`ignore_eos` / `min_new_tokens`), after a warm-up. Decode speed is
taken as (N - 1) / (time for N new tokens - time for 1), which removes the prefill, best of `--repeats`.
Both run with the same torch thread count, one by default: at this size a decode step is bound by per-op latency
and memory bandwidth, which more threads barely help, and on a shared machine one thread measures steadier.
bf16 is the default (the checkpoints' dtype). The two engines' greedy tokens are compared too: in fp32 they agree
throughout; in bf16 different rounding flips near-ties, so they may part at any step (here at the second token,
where fp32 logits differ by 1e-3 and ours picks what fp32 picks).
Run: `python bench/engine_cpu.py [--dtype bf16|fp32] [--threads N]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from engine.llm import LLM
from engine.sampling import SamplingParams
from engine.tiny import make_tiny

BENCH_MODEL: dict[str, Any] = {
    "hidden_size": 384, "intermediate_size": 1024, "moe_intermediate_size": 128,
    "num_hidden_layers": 6, "first_k_dense_replace": 1,
    "num_attention_heads": 8, "num_key_value_heads": 8,
    "q_lora_rank": 192, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
    "n_routed_experts": 32, "num_experts_per_tok": 4, "n_shared_experts": 1,
}  # fmt: skip
"""K2's layout (`k2` preset) at a width where weights no longer sit in cache: ~119 MB in fp32."""
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _best_seconds(run: Callable[[int], Sequence[int]], new_tokens: int, repeats: int) -> tuple[float, list[int]]:
    best, tokens = float("inf"), list(run(new_tokens))
    for _ in range(repeats):
        start = time.perf_counter()
        run(new_tokens)
        best = min(best, time.perf_counter() - start)
    return best, tokens


def decode_rate(run: Callable[[int], Sequence[int]], new_tokens: int, repeats: int) -> tuple[float, list[int]]:
    """Tokens per second after the first, and the tokens of an N-token run."""
    run(8)  # warm-up: first calls allocate and pick kernels
    one, _ = _best_seconds(run, 1, repeats)
    many, tokens = _best_seconds(run, new_tokens, repeats)
    return (new_tokens - 1) / (many - one), tokens


def ours(path: Path, dtype: str, prompt: list[int]) -> Callable[[int], Sequence[int]]:
    llm = LLM(path, dtype=TORCH_DTYPES[dtype])

    def run(new_tokens: int) -> Sequence[int]:
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        return llm.generate([prompt], params)[0].token_ids

    return run


def transformers_generate(path: Path, dtype: str, prompt: list[int]) -> Callable[[int], Sequence[int]]:
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    # config.json says model_type "kimi_k2", which transformers does not map; its class reads the same fields
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "quantization_config", "torch_dtype")}
    model = DeepseekV3ForCausalLM.from_pretrained(path, config=DeepseekV3Config(**fields), dtype=TORCH_DTYPES[dtype])
    model.eval()
    ids = torch.tensor([prompt])

    def run(new_tokens: int) -> Sequence[int]:
        with torch.inference_mode():
            out = model.generate(
                ids, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0
            )
        return out[0, len(prompt) :].tolist()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(TORCH_DTYPES), default="bf16")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both engines (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompt = [(17 * i + 100) % 1000 for i in range(args.prompt_tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny(Path(tmp) / "k2-bench", preset="k2", dtype=args.dtype, overrides=BENCH_MODEL)
        ours_rate, ours_tokens = decode_rate(ours(path, args.dtype, prompt), args.new_tokens, args.repeats)
        hf_rate, hf_tokens = decode_rate(transformers_generate(path, args.dtype, prompt), args.new_tokens, args.repeats)
    same = next((i for i, (a, b) in enumerate(zip(ours_tokens, hf_tokens, strict=True)) if a != b), args.new_tokens)
    print(f"K2-shaped MoE {args.dtype}, {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"  kcode engine            {ours_rate:8.1f} tokens/s")
    print(f"  transformers generate   {hf_rate:8.1f} tokens/s")
    print(f"  ratio                   {ours_rate / hf_rate:8.2f}x")
    print(f"  greedy tokens agree     first {same} of {args.new_tokens}")


if __name__ == "__main__":
    main()
