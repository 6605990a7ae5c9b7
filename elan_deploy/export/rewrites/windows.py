"""Window partition and merge in channel-last layout, never above rank 5 (rank4 forms: see below).

The reference splits b,c,H,W into a rank-6 view and permutes it in one go. Core ML rejects
tensors above rank 5, and DESIGN.md measured channel-last partitions as much faster on
OpenVINO. Here the input is already channel-last (b,H,W,c) and H is split first:

    partition:  b,H,W,c → (b·nh),ws,nw,ws,c → permute(0,2,1,3,4) → (b·nh·nw),(ws·ws),c
    merge:      (b·nh·nw),(ws·ws),c → (b·nh),nw,ws,ws,c → permute(0,2,1,3,4) → b,H,W,c

which gives windows in the reference order (b, window row, window column) with tokens in
(dh, dw) order, i.e. exactly `elan.window_partition(x_nchw)`. The only shape values read off
the graph are W/ws (and H, W for the merge); the channel count is passed in as a constant so
the exported Reshape targets stay as static as possible.
"""

from __future__ import annotations

import torch


def partition_windows(x: torch.Tensor, wsize: int, channels: int, columns: int | None = None) -> torch.Tensor:
    """b,H,W,c (channel-last) → (b·H/ws·W/ws), ws·ws, c. H and W must be multiples of `wsize`.

    `columns` (= W / ws) may be passed in so that an exported graph computes it once per
    window size instead of once per call.
    """
    if columns is None:
        columns = x.shape[2] // wsize
    x = x.reshape(-1, wsize, columns, wsize, channels)
    x = x.permute(0, 2, 1, 3, 4)
    return x.reshape(-1, wsize * wsize, channels)


def partition_windows_rank4(x: torch.Tensor, wsize: int, channels: int, columns: int | None = None) -> torch.Tensor:
    """b,H,W,c (channel-last) → b, H/ws, W/ws, ws·ws, c with no tensor above rank 5.

    The same windows in the same order as `partition_windows`, with the batch and the window
    row kept apart:

        b,H,W,c → b,nh,ws,nw,ws·c → permute(0,1,3,2,4) → b,nh,nw,(ws·ws),c

    Past the batch no tensor has more than four axes, the most ncnn has (PNNX drops the batch
    axis of 1 when it converts). The window rows and columns stay two axes, so every size of
    every Reshape that depends on H or W is one axis of that Reshape's input, multiplied or
    divided by ws (nh = H/ws, H = nh·ws, ...): ncnn can compute it from the input
    (`runtimes.ncnn.any_size`), and one converted file runs any H x W. The attention then
    batches over (b, nh, nw).
    """
    rows = x.shape[1] // wsize
    if columns is None:
        columns = x.shape[2] // wsize
    x = x.reshape(-1, rows, wsize, columns, wsize * channels).permute(0, 1, 3, 2, 4)
    return x.reshape(-1, rows, columns, wsize * wsize, channels)


def merge_windows_rank4(
    y: torch.Tensor, wsize: int, height: int, width: int, channels: int, columns: int | None = None
) -> torch.Tensor:
    """Inverse of `partition_windows_rank4`: b, nh, nw, ws·ws, c → b,H,W,c (channel-last)."""
    if columns is None:
        columns = width // wsize
    y = y.reshape(-1, height // wsize, columns, wsize, wsize * channels).permute(0, 1, 3, 2, 4)
    return y.reshape(-1, height, width, channels)


def merge_windows(
    y: torch.Tensor, wsize: int, height: int, width: int, channels: int, columns: int | None = None
) -> torch.Tensor:
    """Inverse of `partition_windows`: (b·nh·nw), ws·ws, c → b,H,W,c (channel-last)."""
    if columns is None:
        columns = width // wsize
    y = y.reshape(-1, columns, wsize, wsize, channels)
    y = y.permute(0, 2, 1, 3, 4)
    return y.reshape(-1, height, width, channels)
