"""Bit depth and chroma subsampling: the layout a source carries, and the closest the encoder takes.

Keeping both where the encoder can means a 10-bit or 4:4:4 source is not quietly written as
8-bit 4:2:0; where it cannot, one note says what changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from elan_deploy.errors import ElanDeployError

CHROMA_LABELS = {"444": "4:4:4", "422": "4:2:2", "440": "4:4:0", "420": "4:2:0"}
CHROMA_SAMPLES = {"444": 4, "422": 2, "440": 2, "420": 1}  # chroma samples per 4 pixels
DEPTHS = (8, 10, 12)


@dataclass(frozen=True)
class PixelLayout:
    """A planar YUV layout: chroma subsampling ('444', '422', '440', '420') and bits per sample."""

    chroma: str  # a key of CHROMA_LABELS
    depth: int  # one of DEPTHS

    @property
    def name(self) -> str:
        return f"yuv{self.chroma}p" + ("" if self.depth == 8 else f"{self.depth}le")

    @property
    def label(self) -> str:
        return f"{self.depth}-bit {CHROMA_LABELS[self.chroma]}"

    def fits(self, width: int, height: int) -> bool:
        """Subsampled chroma needs an even size along each subsampled axis."""
        even_w, even_h = width % 2 == 0, height % 2 == 0
        return {"444": True, "422": even_w, "440": even_h, "420": even_w and even_h}[self.chroma]


def source_layout(fmt) -> PixelLayout:
    """The layout a decoded PyAV VideoFormat carries (RGB as 4:4:4, gray as 4:2:0: no chroma to keep)."""
    components = [c for c in fmt.components if not c.is_alpha] or list(fmt.components)
    depth = max(c.bits for c in components)
    if len(components) < 3:
        chroma = "420"
    elif fmt.is_rgb:
        chroma = "444"
    else:
        chroma = {(16, 16): "444", (8, 16): "422", (16, 8): "440"}.get((fmt.chroma_width(16), fmt.chroma_height(16)), "420")
    return PixelLayout(chroma, depth)


def choose_pixel_format(codec, width: int, height: int, source: PixelLayout, source_name: str) -> tuple[PixelLayout, str | None]:
    """(output layout, note): the input's chroma and depth if the encoder takes them at this size,
    else the closest it takes (chroma first, then depth), with a note saying what changed."""
    names = {f.name for f in (codec.video_formats or [])} or {"yuv420p"}
    wanted = PixelLayout(source.chroma, next((d for d in DEPTHS if d >= source.depth), DEPTHS[-1]))
    chromas = ("444", "422", "420") + (("440",) if wanted.chroma == "440" else ())
    options = [PixelLayout(c, d) for c in chromas for d in DEPTHS]
    options = [o for o in options if o.name in names and o.fits(width, height)]
    if not options:
        raise ElanDeployError(f"{codec.name} cannot encode an odd output size {width}x{height}; use another --scale or --codec libx264")

    def cost(option: PixelLayout) -> tuple[int, ...]:
        chroma_loss = max(0, CHROMA_SAMPLES[wanted.chroma] - CHROMA_SAMPLES[option.chroma])
        depth_loss = max(0, min(source.depth, wanted.depth) - option.depth)
        return (chroma_loss + depth_loss > 0, chroma_loss, depth_loss, CHROMA_SAMPLES[option.chroma], option.depth)

    chosen = min(options, key=cost)
    if cost(chosen)[0]:
        return chosen, f"{codec.name} cannot keep the input's {source.label} ({source_name}); written as {chosen.label} ({chosen.name})"
    return chosen, None
