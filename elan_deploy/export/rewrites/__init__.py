"""One module per export rewrite of the reference ELAN (MMDeploy-style: apart from the model).

Each rewrite replaces one pattern of `elan_deploy.model.elan` with an export-friendly form of
identical math, and is tested on its own against the reference piece it replaces:

- `batchnorm`  : eval-mode BatchNorm folded into the preceding 1x1 conv (GMSA.project_inp).
- `mean_shift` : `sub_mean` as an explicit constant offset, `add_mean` folded into the tail conv.
- `shift_conv` : the one-hot shift-conv as "depthwise", "slice" or "dense".
- `roll`       : `torch.roll` as static slice + concat.
- `windows`    : window partition / merge, channel-last, no tensor above rank 5.
- `attention`  : GMSA with explicit shared attention ("shared") or per-GMSA SDPA ("sdpa").
- `range_guard`: the range guard's per-channel clamps folded into the convs (`model.range_guard`); not
  an identity like the others, but the same math as the guarded reference.
"""

from elan_deploy.export.rewrites.attention import ATTENTION_STRATEGIES, DeployGMSA
from elan_deploy.export.rewrites.batchnorm import fold_batchnorm
from elan_deploy.export.rewrites.mean_shift import InputOffset, fold_output_affine, input_offset
from elan_deploy.export.rewrites.roll import static_roll
from elan_deploy.export.rewrites.shift_conv import (
    SHIFT_STRATEGIES,
    DenseShiftConv,
    DepthwiseShiftConv,
    SliceShiftConv,
    build_shift_conv,
)
from elan_deploy.export.rewrites.windows import merge_windows, partition_windows

__all__ = [
    "ATTENTION_STRATEGIES",
    "DenseShiftConv",
    "DeployGMSA",
    "DepthwiseShiftConv",
    "InputOffset",
    "SHIFT_STRATEGIES",
    "SliceShiftConv",
    "build_shift_conv",
    "fold_batchnorm",
    "fold_output_affine",
    "input_offset",
    "merge_windows",
    "partition_windows",
    "static_roll",
]
