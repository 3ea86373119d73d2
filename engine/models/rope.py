"""Rotary position embedding as K2 and DeepSeek-V3 use it: interleaved pairs, YaRN's frequency interpolation
and its softmax amplitude, for explicit positions (so padded and cached sequences rotate correctly)."""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.config import ModelConfig


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Per-pair angular frequency [R/2] in float64, with YaRN's interpolation of the low frequencies."""
    dim, base = config.qk_rope_head_dim, config.rope_theta
    freqs = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    yarn = config.rope_scaling
    if yarn is None:
        return freqs

    def correction_dim(rotations: float) -> float:
        # the pair index whose wavelength fits `rotations` times into the original context
        return dim * math.log(yarn.original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(yarn.beta_fast)), 0)
    high = min(math.ceil(correction_dim(yarn.beta_slow)), dim - 1)
    span = high - low if high != low else 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / span).clamp(0, 1)
    keep = 1 - ramp  # 1: high frequency, extrapolated as is; 0: divided by the factor
    return freqs / yarn.factor * (1 - keep) + freqs * keep


class RotaryEmbedding(nn.Module):
    """cos/sin [B, S, R/2] for explicit positions, so padded and cached sequences rotate correctly.

    Angles are computed in float64 (fp32 loses ~1e-4 rad at position 3000); the frequencies are a plain
    attribute rather than a buffer so that casting the model never rounds them.
    """

    def __init__(self, config: ModelConfig, device: torch.device | str):
        super().__init__()
        self.amplitude = config.rope_amplitude
        self.inv_freq = rope_inv_freq(config).to(device)  # [R/2] float64

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(positions.device)
        angles = positions.to(torch.float64)[..., None] * inv_freq  # [B, S, R/2]
        return (angles.cos() * self.amplitude).float(), (angles.sin() * self.amplitude).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x0, x1), (x2, x3), ... of the last dim, as the checkpoints are laid out."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)
