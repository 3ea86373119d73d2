"""GPU kernels, each beside the plain torch reference it is tested against.

`engine.kernels.select` decides which runs: Triton (or `torch._scaled_mm`) on a CUDA device, the torch
references on the CPU. Triton is imported lazily, inside the GPU paths: CUDA builds of torch bring it, the
CPU install does not need it. Tests run the Triton kernels on the CPU with `TRITON_INTERPRET=1`.
"""
