"""Small natural images, corrupt files and a short clip with audio for the batch, Ray and video tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# (height, width) of the LR test images: mixed small sizes, none a multiple of 16 in both.
MIXED_SIZES = [(20, 24), (24, 32), (28, 20), (32, 32), (36, 44), (40, 48), (48, 40), (44, 36), (30, 26), (22, 46), (46, 22), (34, 38)]


def photo(shared: Path, name: str = "Set5/HR/baby.png") -> np.ndarray:
    return np.asarray(Image.open(shared / name).convert("RGB"))


def make_mixed_folder(folder: Path, shared: Path, corrupt: int = 2, sizes=MIXED_SIZES) -> list[Path]:
    """Natural crops of mixed sizes (PNG and JPEG) plus `corrupt` broken files; returns the good ones."""
    folder.mkdir(parents=True, exist_ok=True)
    source = photo(shared)
    good = []
    for i, (h, w) in enumerate(sizes):
        crop = np.ascontiguousarray(source[15 * i : 15 * i + h, 11 * i : 11 * i + w])
        path = folder / (f"img{i:02d}.jpg" if i % 4 == 3 else f"img{i:02d}.png")
        Image.fromarray(crop).save(path, **({"quality": 92} if path.suffix == ".jpg" else {}))
        good.append(path)
    if corrupt >= 1:  # a PNG cut off in the middle of its pixel data
        data = good[0].read_bytes()
        (folder / "broken_truncated.png").write_bytes(data[: len(data) // 2])
    if corrupt >= 2:  # not an image at all
        (folder / "broken_text.jpg").write_bytes(b"this is not a JPEG file\n" * 8)
    return good


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """name -> (inode, mtime_ns, bytes) of every file, to prove what a run did or did not touch."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}


def make_clip(path: Path, shared: Path, frames: int = 12, size: tuple[int, int] = (48, 64), fps: int = 12,
              audio_codec: str = "aac") -> None:
    """An H.264 clip of a slowly panning photo with a 440 Hz mono tone as long as the video."""
    import av

    source = photo(shared)
    h, w = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        audio = out.add_stream(audio_codec, rate=44100)
        audio.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(source[100 + 3 * i : 100 + 3 * i + h, 90 : 90 + w]), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        samples = int(44100 * frames / fps)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)[None]
        fmt = audio.codec_context.format.name
        step = audio.codec_context.frame_size or 1024
        for start in range(0, samples, step):
            chunk = tone[:, start : start + step]
            if fmt == "s16" or fmt == "s16p":
                chunk = (chunk * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
