"""One place decides whether the GPU kernels or the torch references run.

Kernels run for tensors on a CUDA device; everything else takes the references, so the CPU path is the one
the tests pin down. `KCODE_KERNELS=reference` forces the references on a GPU too (to tell a kernel bug from
a model bug); `KCODE_KERNELS=triton` forces the kernels on any device, which with `TRITON_INTERPRET=1` runs
them in Triton's interpreter on the CPU. On the kernel path of a CUDA device decode steps replay CUDA graphs
(`engine.cuda_graphs`); `KCODE_CUDA_GRAPHS=0` runs them eagerly.
"""

from __future__ import annotations

import os

import torch

from engine.errors import ModelInputError

ENV = "KCODE_KERNELS"
GRAPHS_ENV = "KCODE_CUDA_GRAPHS"
_CHOICES = ("auto", "reference", "triton")


def kernel_mode() -> str:
    mode = os.environ.get(ENV, "auto") or "auto"
    if mode not in _CHOICES:
        raise ModelInputError(f"{ENV} must be one of {', '.join(_CHOICES)}, got {mode!r}")
    return mode


def use_kernels(device: torch.device) -> bool:
    """True when the kernels, not the references, should run for tensors on `device`."""
    mode = kernel_mode()
    if mode == "auto":
        return device.type == "cuda"
    return mode == "triton"


def use_cuda_graphs(device: torch.device) -> bool:
    """Decode steps replay CUDA graphs on a CUDA device's kernel path, unless `KCODE_CUDA_GRAPHS=0`."""
    return device.type == "cuda" and use_kernels(device) and os.environ.get(GRAPHS_ENV, "1") != "0"
