"""The K2 / DeepSeek-V3 decoder: multi-head latent attention (MLA) and a sigmoid-routed mixture of experts.

One file in dependency order. Parameter names are the checkpoint's (`model.layers.N.self_attn.kv_b_proj.weight`,
`model.layers.N.mlp.experts.E.up_proj.weight`, ...), so loading needs no rename table. Parameters are created
uninitialised: every value comes from a checkpoint. The slow reference paths stay beside the fast ones and
are selected in `ModelOptions`: `plain` attention decompresses keys and values per head, `absorbed` folds
`kv_b_proj` into the query and output so attention runs over the cached 512-d latent; the `loop` MoE runs
experts one by one, `grouped` sorts tokens by expert first.

Shapes: B batch, S new tokens, T visible key slots (cached + new), H heads, D hidden, C kv_lora_rank,
R qk_rope_head_dim, N flattened tokens, E routed experts, K experts per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ModelConfig
from engine.errors import ModelInputError
from engine.fp8 import FP8_DTYPE, dequantize_block_fp8, scale_grid_shape
from engine.kernels.fp8_linear import fp8_linear
from engine.kernels.fused_moe import StackedExperts, fused_moe, share_stacked_storage, stack_experts
from engine.kernels.select import use_kernels
from engine.models.rope import RotaryEmbedding, apply_rope

Device = torch.device | str
AttentionForm = Literal["plain", "absorbed"]
MoeForm = Literal["loop", "grouped"]

# DeepSeek's reference code and the checkpoints' own modeling code build the two latent norms with their
# default epsilon rather than `rms_norm_eps` (the same for K2, 1e-5 vs 1e-6 where a config says 1e-5).
LATENT_NORM_EPS = 1e-6


@dataclass(frozen=True)
class ModelOptions:
    """How to run the model: passed in, never global."""

    dtype: torch.dtype = torch.bfloat16
    """Weights and activations; the router and the softmax always compute in fp32."""
    attention: AttentionForm = "absorbed"
    moe: MoeForm = "grouped"
    fp8_block: tuple[int, int] | None = None
    """Keep projection weights in block fp8 with this block size, dequantising on the fly."""

    def __post_init__(self) -> None:
        if self.attention not in ("plain", "absorbed"):
            raise ModelInputError(f"attention must be 'plain' or 'absorbed', got {self.attention!r}")
        if self.moe not in ("loop", "grouped"):
            raise ModelInputError(f"moe must be 'loop' or 'grouped', got {self.moe!r}")


# ---- building blocks -----------------------------------------------------------------------------------


def _param(*shape: int, dtype: torch.dtype, device: Device) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype, device=device), requires_grad=False)


class Linear(nn.Module):
    """y = x W^T, without bias (no projection in these checkpoints has one)."""

    def __init__(self, fan_in: int, fan_out: int, *, dtype: torch.dtype, device: Device):
        super().__init__()
        self.weight = _param(fan_out, fan_in, dtype=dtype, device=device)

    def dense_weight(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Fp8Linear(nn.Module):
    """A block-fp8 weight with its fp32 `weight_scale_inv`, kept in fp8: half of bf16's weight memory. On a
    GPU the product runs in fp8 (activations quantised per token per 128 channels, `engine.kernels.fp8_linear`);
    on the CPU the weight is dequantised to the compute dtype on every use."""

    def __init__(self, fan_in: int, fan_out: int, *, block: tuple[int, int], dtype: torch.dtype, device: Device):
        super().__init__()
        self.block = block
        self.compute_dtype = dtype
        self.weight = _param(fan_out, fan_in, dtype=FP8_DTYPE, device=device)
        grid = scale_grid_shape((fan_out, fan_in), block)
        self.weight_scale_inv = _param(*grid, dtype=torch.float32, device=device)

    def dense_weight(self) -> torch.Tensor:
        return dequantize_block_fp8(self.weight, self.weight_scale_inv, self.block, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight, self.weight_scale_inv, self.block)


def _projection(fan_in: int, fan_out: int, options: ModelOptions, device: Device) -> Linear | Fp8Linear:
    """A checkpoint projection: block fp8 when the options keep fp8, else a plain weight."""
    if options.fp8_block is None:
        return Linear(fan_in, fan_out, dtype=options.dtype, device=device)
    return Fp8Linear(fan_in, fan_out, block=options.fp8_block, dtype=options.dtype, device=device)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, *, dtype: torch.dtype, device: Device):
        super().__init__()
        self.eps = eps
        self.weight = _param(dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class Embedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, *, dtype: torch.dtype, device: Device):
        super().__init__()
        self.weight = _param(vocab_size, dim, dtype=dtype, device=device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); the dense layers, each expert and the shared experts."""

    def __init__(self, dim: int, inter: int, options: ModelOptions, device: Device):
        super().__init__()
        self.gate_proj = _projection(dim, inter, options, device)
        self.up_proj = _projection(dim, inter, options, device)
        self.down_proj = _projection(inter, dim, options, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# ---- where attention reads its keys ---------------------------------------------------------------------


LatentAttention = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(q_latent [B, S, H, C], q_pe [B, S, H, R]) -> out_latent [B, S, H, C]: attention in latent space over keys
that live wherever the caller keeps them (gathered tensors, or a paged cache a kernel reads directly)."""


class AttentionContext(Protocol):
    """One forward pass's keys: stores the new tokens' latents where later passes find them and has the layer
    attend over every key each query may see. `DenseAttention` is the cacheless one; the paged latent cache
    (`engine.paged_cache`) is the one generation uses."""

    def attend(
        self, layer: int, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
        attention: MultiHeadLatentAttention,
    ) -> torch.Tensor:
        """The new tokens' q_nope/q_pe [B, S, H, *] and latent/k_pe [B, S, *] -> attention output [B, S, H, v]."""
        ...


class DenseAttention:
    """No cache: the pass attends over its own tokens, causally, skipping padding (`valid` [B, S] false).

    A query always sees itself, so a padding query attends to itself rather than to nothing (a row of -inf
    would turn into NaN); nothing attends to a padding key.
    """

    def __init__(self, valid: torch.Tensor) -> None:
        slot = torch.arange(valid.shape[1], device=valid.device)
        causal = slot[None, :] <= slot[:, None]  # [S, T]
        self.allowed = (valid[:, None, :] & causal) | torch.eye(len(slot), dtype=torch.bool, device=valid.device)

    def attend(
        self, layer: int, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
        attention: MultiHeadLatentAttention,
    ) -> torch.Tensor:
        return attention.attend_over(q_nope, q_pe, latent, k_pe, self.allowed)


# ---- attention -----------------------------------------------------------------------------------------


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, options: ModelOptions, device: Device):
        super().__init__()
        self.layer = layer
        self.form = options.attention
        self.heads = config.num_attention_heads
        self.nope, self.rope, self.v_dim = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.rank = config.kv_lora_rank
        self.scale = config.softmax_scale
        d, q_out = config.hidden_size, self.heads * config.qk_head_dim
        self.q_lora = config.q_lora_rank is not None
        if config.q_lora_rank is None:
            self.q_proj = _projection(d, q_out, options, device)
        else:
            self.q_a_proj = _projection(d, config.q_lora_rank, options, device)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, LATENT_NORM_EPS, dtype=options.dtype, device=device)
            self.q_b_proj = _projection(config.q_lora_rank, q_out, options, device)
        self.kv_a_proj_with_mqa = _projection(d, self.rank + self.rope, options, device)
        self.kv_a_layernorm = RMSNorm(self.rank, LATENT_NORM_EPS, dtype=options.dtype, device=device)
        self.kv_b_proj = _projection(self.rank, self.heads * (self.nope + self.v_dim), options, device)
        self.o_proj = _projection(self.heads * self.v_dim, d, options, device)

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        if self.q_lora:
            return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        return self.q_proj(x)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        """x [B, S, D], cos/sin [B, S, R/2] -> [B, S, D]."""
        batch, new, _ = x.shape
        q = self._query(x).view(batch, new, self.heads, self.nope + self.rope)
        q_nope, q_pe = q.split([self.nope, self.rope], dim=-1)  # [B, S, H, nope], [B, S, H, R]
        q_pe = apply_rope(q_pe, cos[:, :, None], sin[:, :, None])
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.rank, self.rope], dim=-1)
        latent = self.kv_a_layernorm(latent)  # [B, S, C]
        k_pe = apply_rope(k_pe, cos, sin)  # [B, S, R], one key shared by all heads
        out = context.attend(self.layer, q_nope, q_pe, latent, k_pe, self)  # [B, S, H, v]
        return self.o_proj(out.flatten(2))

    def attend_over(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """Attention of queries [B, S, H, *] over keys [B, T, *] where `allowed` [B, S, T], in this layer's form."""
        if self.form == "plain":
            return self._plain(q_nope, q_pe, latent, k_pe, allowed)
        return self.attend_in_latent_space(
            q_nope, q_pe, lambda q_latent, q_rope: self._latent_attention(q_latent, q_rope, latent, k_pe, allowed)
        )

    def attend_with_sdpa(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """The plain form through PyTorch's fused attention, for prefill on a GPU: with many queries per key,
        decompressing 192-wide keys per head costs less than scoring every query against the 576-wide latent."""
        batch, visible, _ = latent.shape
        kv = self.kv_b_proj(latent).view(batch, visible, self.heads, self.nope + self.v_dim)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)
        k = torch.cat([k_nope, k_pe[:, :, None].expand(-1, -1, self.heads, -1)], dim=-1)
        q = torch.cat([q_nope, q_pe], dim=-1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed[:, None], scale=self.scale
        )  # [B, H, S, v]
        return out.transpose(1, 2)

    def attend_in_latent_space(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent_attention: LatentAttention
    ) -> torch.Tensor:
        """The absorbed form around any latent-space attention: q_nope.(W_uk c) = (W_uk^T q_nope).c, so the
        query is folded into the 512-d latent space, and W_uv is applied after the sum."""
        dtype = q_nope.dtype  # on CPU in fp32: torch's bf16 batched matmul there is 4-6x slower than fp32
        compute = torch.float32 if q_nope.device.type == "cpu" else dtype
        w = self.kv_b_proj.dense_weight().view(self.heads, self.nope + self.v_dim, self.rank).to(compute)
        w_uk, w_uv = w[:, : self.nope], w[:, self.nope :]  # [H, nope, C], [H, v, C]
        q_latent = torch.einsum("bshd,hdc->bshc", q_nope.to(compute), w_uk)
        out_latent = latent_attention(q_latent, q_pe.to(compute))
        return torch.einsum("bshc,hdc->bshd", out_latent.to(compute), w_uv).to(dtype)

    def _softmax(self, scores: torch.Tensor, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        scores = (scores.float() * self.scale).masked_fill(~allowed[:, None], float("-inf"))
        return scores.softmax(dim=-1).to(dtype)  # [B, H, S, T]

    def _plain(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """Textbook attention over per-head keys and values decompressed from the latent."""
        batch, visible, _ = latent.shape
        kv = self.kv_b_proj(latent).view(batch, visible, self.heads, self.nope + self.v_dim)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)  # [B, T, H, nope], [B, T, H, v]
        k = torch.cat([k_nope, k_pe[:, :, None].expand(-1, -1, self.heads, -1)], dim=-1)
        q = torch.cat([q_nope, q_pe], dim=-1)
        probs = self._softmax(torch.einsum("bshd,bthd->bhst", q, k), allowed, v.dtype)
        return torch.einsum("bhst,bthd->bshd", probs, v)

    def _latent_attention(
        self, q_latent: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
        allowed: torch.Tensor,
    ) -> torch.Tensor:
        """Softmax attention in latent space over gathered keys [B, T, C] / [B, T, R] -> [B, S, H, C]. Every head
        scores the same keys, so heads and queries share one batched matmul over the concatenated latent and
        roped key (C + R wide): on the CPU that is 2-3x faster than two einsums."""
        batch, new, heads, _ = q_latent.shape
        latent = latent.to(q_latent.dtype)
        keys = torch.cat([latent, k_pe.to(latent.dtype)], dim=-1)  # [B, T, C + R]
        queries = torch.cat([q_latent, q_pe], dim=-1).transpose(1, 2).reshape(batch, heads * new, -1)
        scores = torch.bmm(queries, keys.transpose(1, 2)).view(batch, heads, new, -1)  # [B, H, S, T]
        probs = self._softmax(scores, allowed, latent.dtype).view(batch, heads * new, -1)
        return torch.bmm(probs, latent).view(batch, heads, new, -1).transpose(1, 2)


# ---- mixture of experts --------------------------------------------------------------------------------


class Router(nn.Module):
    """`noaux_tc` routing: sigmoid scores; the bias steers which experts win but not their weights."""

    def __init__(self, config: ModelConfig, device: Device):
        super().__init__()
        self.config = config
        experts = config.n_routed_experts
        self.weight = _param(experts, config.hidden_size, dtype=torch.float32, device=device)  # [E, D]
        self.e_score_correction_bias = _param(experts, dtype=torch.float32, device=device)  # [E]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] -> combine weights [N, K] fp32, expert ids [N, K]."""
        cfg = self.config
        scores = F.linear(x.float(), self.weight.float()).sigmoid()  # [N, E]
        biased = scores + self.e_score_correction_bias
        if cfg.n_group > 1:
            grouped = biased.view(x.shape[0], cfg.n_group, -1)  # [N, G, E/G]
            group_score = grouped.topk(2, dim=-1).values.sum(dim=-1)  # [N, G]
            chosen = group_score.topk(cfg.topk_group, dim=-1).indices
            keep = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, chosen, True)
            biased = grouped.masked_fill(~keep[..., None], float("-inf")).flatten(1)
        indices = biased.topk(cfg.num_experts_per_tok, dim=-1).indices  # [N, K]
        weights = scores.gather(1, indices)
        if cfg.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * cfg.routed_scaling_factor, indices


class MoE(nn.Module):
    def __init__(self, config: ModelConfig, options: ModelOptions, device: Device):
        super().__init__()
        self.form = options.moe
        d, inter = config.hidden_size, config.moe_intermediate_size
        self.gate = Router(config, device)
        self.experts = nn.ModuleList(MLP(d, inter, options, device) for _ in range(config.n_routed_experts))
        shared = config.n_shared_experts
        self.shared_experts = MLP(d, inter * shared, options, device) if shared else None
        self._stacked: StackedExperts | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # [N, D]
        weights, indices = self.gate(flat)
        if use_kernels(flat.device):
            return self._fused(flat, weights, indices).view_as(x)
        route = self._loop if self.form == "loop" else self._grouped
        out = route(flat, weights, indices).to(x.dtype)
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        return out.view_as(x)

    def _fused(self, flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The fused kernels. A shared expert shaped like the routed ones (K2 and DeepSeek-V3 have one) is folded
        in as one more expert that every token picks with weight 1: a decode step, short of launches rather
        than of arithmetic, saves three GEMMs per layer."""
        stacked, folded = self._stacked_experts()
        if folded:
            shared = indices.new_full((flat.shape[0], 1), len(self.experts))
            indices, weights = torch.cat([indices, shared], dim=1), torch.cat([weights, torch.ones_like(shared)], 1)
        out = fused_moe(flat, weights, indices, stacked).to(flat.dtype)
        if self.shared_experts is not None and not folded:
            out = out + self.shared_experts(flat)
        return out

    def _stacked_experts(self) -> tuple[StackedExperts, bool]:
        """The experts' weights as the fused kernels read them, and whether the shared expert is among them;
        stacked on first use: the checkpoint loads into the per-expert modules by name, which then share the
        stacks' storage rather than hold a second copy."""
        if self._stacked is None:
            shared, routed_gate = self.shared_experts, self.experts[0].get_submodule("gate_proj")
            foldable = shared is not None and shared.gate_proj.weight.shape == routed_gate.weight.shape
            members = [*self.experts, *([shared] if foldable else [])]
            self._stacked = stack_experts(members)
            share_stacked_storage(members, self._stacked)
        return self._stacked, self._stacked.num_experts > len(self.experts)

    def _loop(self, flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Reference: each expert in turn gathers its tokens; sums in fp32."""
        out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(indices == e)
            if token.numel():
                out.index_add_(0, token, expert(flat[token]).float() * weights[token, slot, None])
        return out

    def _grouped(self, flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Sort the N*K (token, expert) pairs by expert so each active expert runs once on one contiguous
        slice: the layout a grouped GEMM takes."""
        top_k = indices.shape[1]
        order = indices.flatten().argsort(stable=True)  # [N*K], grouped by expert
        counts = torch.bincount(indices.flatten(), minlength=len(self.experts))
        active = counts.nonzero().flatten()  # at most N*K of the E experts: the others cost nothing
        token = order // top_k
        chunks = flat[token].split(counts[active].tolist())
        outputs = [self.experts[e](chunk).float() for e, chunk in zip(active.tolist(), chunks, strict=True)]
        routed = torch.cat(outputs) * weights.flatten()[order, None]
        return torch.zeros(flat.shape, dtype=torch.float32, device=flat.device).index_add_(0, token, routed)


# ---- the model -----------------------------------------------------------------------------------------


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, options: ModelOptions, device: Device):
        super().__init__()
        eps, dtype = config.rms_norm_eps, options.dtype
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype=dtype, device=device)
        self.self_attn = MultiHeadLatentAttention(config, layer, options, device)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype=dtype, device=device)
        self.mlp: MoE | MLP = (
            MoE(config, options, device)
            if config.is_moe_layer(layer)
            else MLP(config.hidden_size, config.intermediate_size, options, device)
        )

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, context)
        return h + self.mlp(self.post_attention_layernorm(h))


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, S] positions counting only real tokens, for left- or right-padded prompts. A pad repeats the position
    of the real token before it (0 if none): right padding gives len-1. Pads are masked, so it never matters."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


class DeepseekV3Model(nn.Module):
    def __init__(self, config: ModelConfig, options: ModelOptions, device: Device):
        super().__init__()
        dtype = options.dtype
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype=dtype, device=device)
        self.layers = nn.ModuleList(DecoderLayer(config, i, options, device) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype, device=device)
        self.rotary = RotaryEmbedding(config, device)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        """ids, positions [B, S] -> final normed hidden states [B, S, D]."""
        cos, sin = self.rotary(positions)
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = layer(h, cos, sin, context)
        return self.norm(h)


class DeepseekV3ForCausalLM(nn.Module):
    """The decoder plus `lm_head`; `forward` takes explicit positions and where attention finds its keys."""

    def __init__(self, config: ModelConfig, options: ModelOptions | None = None, device: Device = "cpu"):
        super().__init__()
        self.config = config
        self.options = options or ModelOptions()
        self.model = DeepseekV3Model(config, self.options, device)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, dtype=self.options.dtype, device=device)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        context: AttentionContext | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """fp32 logits [B, S, V], or [B, V] for the token at `logits_index` [B] of each row.

        `positions` [B, S] are each token's RoPE position (see `positions_from_mask`). Without a `context` the
        tokens attend causally among themselves, `attention_mask` [B, S] marking the real ones; with one (the
        paged cache) they also see the tokens it holds, and the mask is its business.
        """
        _check_inputs(input_ids, positions, attention_mask)
        if context is None:
            valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
            context = DenseAttention(valid)
        hidden = self.model(input_ids, positions, context)
        if logits_index is not None:
            hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), logits_index]
        return self.lm_head(hidden).float()


def _check_inputs(input_ids: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    if input_ids.dim() != 2:
        raise ModelInputError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    for name, tensor in (("positions", positions), ("attention_mask", attention_mask)):
        if tensor is not None and tensor.shape != input_ids.shape:
            raise ModelInputError(
                f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(tensor.shape)}"
            )
