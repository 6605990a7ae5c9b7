"""Video files through the Upscaler with PyAV: decode, upscale, encode in one stream.

Frames go from the decoder through the `Upscaler` (which tiles and batches inside the frame)
straight into the encoder, one at a time, so memory is a few frames whatever the length of the
clip and no image files are written. Every decoded frame is encoded with its own timestamp in the
input's time base, so frame count, frame rate (constant or variable) and duration are kept. Audio
streams are copied packet for packet (remuxed, never re-encoded), so they keep their exact
timing. Subtitle and data streams are not copied.

What players show is kept: a display matrix (phones store portrait video landscape with a
rotation) is applied to the frames, as still images apply their EXIF orientation, so the output
is upright in every player and container. Bit depth and chroma subsampling are kept where the
encoder can (10-bit frames go through the float Upscaler, never through 8 bits); otherwise one
note says what changed.

A decode that comes up short of what the container declares (frames or duration), or hits a
packet that does not decode, fails the video unless `allow_partial` is set: a truncated file is
not silently written as a shorter clip.

The output is written to a hidden temporary beside the target and renamed when complete.
"""

from elan_deploy.batch.video.completeness import SHORT_BY_FRAMES, Decoded, missing
from elan_deploy.batch.video.encoding import (
    BITS_PER_PIXEL,
    CRF_CODECS,
    DEFAULT_CRF,
    FALLBACK_CODEC,
    PREFERRED_CODEC,
    VideoOptions,
    check_options,
    choose_codec,
    parse_bitrate,
)
from elan_deploy.batch.video.frames import UPRIGHT, Orientation, orientation_from_matrix
from elan_deploy.batch.video.pixels import CHROMA_LABELS, CHROMA_SAMPLES, DEPTHS, PixelLayout, choose_pixel_format, source_layout
from elan_deploy.batch.video.probe import Declared, FirstFrame, declared_length, probe_first_frame
from elan_deploy.batch.video.transcode import PARTIAL_HINT, VideoReport, upscale_video

__all__ = [
    "BITS_PER_PIXEL",
    "CHROMA_LABELS",
    "CHROMA_SAMPLES",
    "CRF_CODECS",
    "DEFAULT_CRF",
    "DEPTHS",
    "FALLBACK_CODEC",
    "PARTIAL_HINT",
    "PREFERRED_CODEC",
    "SHORT_BY_FRAMES",
    "UPRIGHT",
    "Declared",
    "Decoded",
    "FirstFrame",
    "Orientation",
    "PixelLayout",
    "VideoOptions",
    "VideoReport",
    "check_options",
    "choose_codec",
    "choose_pixel_format",
    "declared_length",
    "missing",
    "orientation_from_matrix",
    "parse_bitrate",
    "probe_first_frame",
    "source_layout",
    "upscale_video",
]
