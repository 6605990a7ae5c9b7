"""Upscaler: pad, tile, run, crop and stitch images of any size through any engine, in bounded memory.

- `upscaler`: the `Upscaler` class, the one place that pads, tiles, batches and stitches;
- `memory`: what an image's work will take and what the machine has room for;
- tile and padding geometry live in `elan_deploy.geometry` (NumPy only, shared with `serve`).
"""

from elan_deploy.geometry import DEFAULT_OVERLAP, DEFAULT_TILE, MULTIPLE, WRAP_CONTEXT, round_up, seams, tile_starts, wrap_aware_indices
from elan_deploy.upscale.memory import BYTES_PER_LR_PIXEL, MAX_MEMORY_ENV, PROCESS_BASE_BYTES, MemoryEstimate, available_memory
from elan_deploy.upscale.upscaler import OutputRange, Upscaler, engine_hint, engine_label

__all__ = [
    "BYTES_PER_LR_PIXEL", "DEFAULT_OVERLAP", "DEFAULT_TILE", "MAX_MEMORY_ENV", "MULTIPLE", "PROCESS_BASE_BYTES", "WRAP_CONTEXT",
    "MemoryEstimate", "OutputRange", "Upscaler", "available_memory", "engine_hint", "engine_label", "round_up", "seams", "tile_starts",
    "wrap_aware_indices",
]
