"""Image I/O, MATLAB-compatible bicubic resizing and colour conversions.

Inside the toolkit images are RGB float32 HxWx3 arrays on the 0..255 scale; uint8 only at
the edges (files on disk). The SR literature builds its low-resolution inputs and its Y-channel
metrics with MATLAB's `imresize` and `rgb2ycbcr`, so both are reproduced here exactly: a
different resize kernel or colour matrix would shift reported PSNR by tenths of a dB.

`io` reads and lists image files, `resize` is MATLAB's `imresize`, `colour` its YCbCr
conversions and `layout` moves between HxWx3 images and 1x3xHxW tensors. Images are written
by `elan_deploy.batch.outputs.write_output`.
"""

from __future__ import annotations

from elan_deploy.imaging.colour import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from elan_deploy.imaging.io import (
    DECODE_MAX_PIXELS,
    FINITE_HINT,
    IMAGE_EXTENSIONS,
    MAX_PIXELS_ENV,
    ImageInfo,
    check_finite,
    list_images,
    pixel_limit,
    read_image,
    read_image_info,
    to_uint8,
)
from elan_deploy.imaging.layout import hwc_to_nchw, nchw_to_hwc
from elan_deploy.imaging.resize import imresize, modcrop

__all__ = [
    "DECODE_MAX_PIXELS",
    "FINITE_HINT",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "ImageInfo",
    "check_finite",
    "hwc_to_nchw",
    "imresize",
    "list_images",
    "modcrop",
    "nchw_to_hwc",
    "pixel_limit",
    "read_image",
    "read_image_info",
    "rgb_to_y",
    "rgb_to_ycbcr",
    "to_uint8",
    "ycbcr_to_rgb",
]
