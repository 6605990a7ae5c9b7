"""`torch.roll` as static slice + concat.

`roll(x, k)` along an axis is `cat(x[-k:], x[:-k])`, whose slice bounds are constants for any
axis length n with 0 < |k| < n. Writing it out keeps the exported graph independent of how an
exporter lowers `aten::roll` and free of shape arithmetic. ELAN rolls by half a window (≤ 8)
on axes that are multiples of 16, so the bound always holds in the exported graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def is_tracing() -> bool:
    """True while a graph is captured (TorchScript/ONNX export or torch.export for Core ML):
    eager-only checks that read concrete sizes must not run then, or they freeze the shape."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def static_roll(x: torch.Tensor, shifts: int | Sequence[int], dims: int | Sequence[int]) -> torch.Tensor:
    """Same result as `torch.roll(x, shifts, dims)` for |shift| < size along each dim.

    In eager mode a larger shift is first reduced modulo the axis length, as `torch.roll` does;
    while tracing the length is symbolic, so the caller guarantees the bound.
    """
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise ValueError(f"static_roll: {len(shifts)} shifts for {len(dims)} dims")
    for shift, dim in zip(shifts, dims):
        if not is_tracing():
            size = x.shape[dim]
            if size == 0:
                continue
            if abs(shift) >= size:
                shift = shift % size if shift > 0 else -((-shift) % size)
        if shift == 0:
            continue
        x = torch.cat((_along(x, dim, slice(-shift, None)), _along(x, dim, slice(None, -shift))), dim=dim)
    return x


def _along(x: torch.Tensor, dim: int, index: slice) -> torch.Tensor:
    """x[..., index, ...] with `index` applied to axis `dim` (a single static Slice in ONNX)."""
    full = [slice(None)] * x.dim()
    full[dim] = index
    return x[tuple(full)]
