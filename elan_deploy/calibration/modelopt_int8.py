"""Optional second Q/DQ producer: NVIDIA ModelOpt's ONNX INT8 quantizer, only if importable.

ModelOpt writes Q/DQ "following TensorRT rules" and is NVIDIA's own answer for TensorRT's
explicit quantization; it is not a dependency (it is large and CUDA-oriented) and is not
installed in the project's CI, so this path is untested there. It reuses the same T91 patches
and the float set the ORT search measured (`nodes_to_exclude`), so the two files differ only
in the producer. ModelOpt's calibrator takes one fixed input shape, so only the patches of
the most common shape are used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elan_deploy.calibration.data import PatchSpec, load_patches, to_nchw
from elan_deploy.errors import RuntimeUnavailable
from elan_deploy.fileio import atomic_path

MODELOPT_METHODS = {"entropy": "entropy", "minmax": "max"}


def modelopt_available() -> bool:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def write_int8_modelopt(
    fp32: Path, out: Path, scale: int, float_nodes: Sequence[str] = (), method: str = "entropy",
    patches: int = 64, patch_size: int = 64, seed: int = 0, calib_dir: Path | None = None,
) -> Path:
    """Quantize `fp32` with `modelopt.onnx.quantization.quantize` (INT8, TensorRT Q/DQ rules)."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError:
        raise RuntimeUnavailable("NVIDIA ModelOpt is not installed (optional); pip install 'nvidia-modelopt[onnx]'") from None
    if method not in MODELOPT_METHODS:
        raise RuntimeUnavailable(f"ModelOpt calibrates with {', '.join(MODELOPT_METHODS)}; not '{method}'")
    crops, _ = load_patches(PatchSpec(scale=scale, patches=patches, patch_size=patch_size, seed=seed), calib_dir)
    shape, _ = Counter(c.shape for c in crops).most_common(1)[0]
    data = np.concatenate([to_nchw(c) for c in crops if c.shape == shape])
    with atomic_path(out) as tmp:
        quantize(
            onnx_path=str(fp32), quantize_mode="int8", calibration_data=data, calibration_method=MODELOPT_METHODS[method],
            calibration_eps=["cpu"], op_types_to_quantize=["Conv", "MatMul"], nodes_to_exclude=list(float_nodes),
            output_path=str(tmp),
        )
    return Path(out)
