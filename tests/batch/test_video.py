"""Video through the Upscaler with PyAV (issue 16 item 3): frames, rate, duration and audio kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elan_deploy.cli import main
from elan_deploy.runtimes import EngineLoader, ShapeRange
from elan_deploy.upscale import Upscaler
from tests.helpers import make_clip, photo

av = pytest.importorskip("av")

FRAMES, FPS, SIZE = 12, 12, (48, 64)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    make_clip(path, shared_data, FRAMES, SIZE, FPS, audio_codec="aac")
    return path


def _probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video=0))
        return {
            "frames": len(frames),
            "pts": [f.pts for f in frames],
            "time_base": video.time_base,
            "rate": video.average_rate,
            "size": (video.codec_context.height, video.codec_context.width),
            "duration": float(frames[-1].pts * video.time_base) + 1 / float(video.average_rate),
            "audio": [(a.codec_context.name, a.sample_rate, a.channels) for a in container.streams.audio],
            "first": frames[0].to_ndarray(format="rgb24"),
        }


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_video_keeps_frames_rate_duration_and_audio(clip: Path, tmp_path: Path, model_source, exported_onnx, capsys) -> None:
    out = tmp_path / "clip_x4.mp4"
    assert main(["upscale", str(clip), "-o", str(out), "--onnx", str(exported_onnx)]) == 0
    src, up = _probe(clip), _probe(out)
    assert up["frames"] == src["frames"] == FRAMES
    assert up["rate"] == src["rate"] == FPS
    assert [p * up["time_base"] for p in up["pts"]] == [p * src["time_base"] for p in src["pts"]]
    assert up["duration"] == pytest.approx(src["duration"], abs=1e-6)
    assert up["size"] == (4 * SIZE[0], 4 * SIZE[1])
    assert up["audio"] == src["audio"] and up["audio"][0][0] == "aac"
    err = capsys.readouterr().err
    assert f"{FRAMES} frames in" in err and "frames/s" in err and "1 audio stream(s) copied" in err

    # Frame 0 against `upscale` of the decoded input frame: only the encoder (crf 18, 4:2:0) differs.
    engine = EngineLoader(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x16x16:1x3x192x320:4x3x512x512")).open()
    reference = Upscaler(engine, 4).upscale_uint8(src["first"])
    assert _psnr(up["first"], reference) > 36.0
    assert not [p for p in tmp_path.iterdir() if ".elan-tmp-" in p.name], "a temporary file was left"
    assert (tmp_path / ".clip_x4.mp4.elan-deploy.json").is_file()  # the record that lets a rerun skip it


def test_fallback_codec_with_bitrate_and_mp2_audio(tmp_path: Path, shared_data, exported_onnx) -> None:
    clip = tmp_path / "mp2.mkv"
    make_clip(clip, shared_data, frames=4, audio_codec="mp2")
    out = tmp_path / "out.mkv"
    assert main(["upscale", str(clip), "-o", str(out), "--onnx", str(exported_onnx), "--codec", "mpeg4", "--bitrate", "2M"]) == 0
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
        assert [a.codec_context.name for a in container.streams.audio] == ["mp2"]
        assert sum(1 for _ in container.decode(video=0)) == 4


def test_video_flags_are_checked_before_work(clip: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "x.mp4")
    assert main(["upscale", str(clip), "-o", out, "--codec", "mpeg4", "--crf", "20"]) == 2
    assert "--crf works with" in capsys.readouterr().err
    assert main(["upscale", str(clip), "-o", out, "--codec", "no-such-codec"]) == 2
    assert main(["upscale", str(clip), "-o", out, "--bitrate", "fast"]) == 2
    assert main(["upscale", str(clip), "-o", str(tmp_path / "x.png")]) == 2
    assert main(["upscale", str(clip), "-o", str(clip), "--ray"]) == 2
    assert not list(tmp_path.iterdir())


def test_existing_video_output_is_not_replaced(clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine.mp4"
    out.write_bytes(b"a video the user made")
    assert main(["upscale", str(clip), "-o", str(out)]) == 2
    assert out.read_bytes() == b"a video the user made"
    assert main(["upscale", str(clip), "-o", str(clip)]) == 2


# --- orientation, truncated inputs, bit depth and chroma --------------------------------------


def _write_clip(path: Path, frames: list[np.ndarray], *, fmt: str = "rgb24", pix_fmt: str = "yuv420p",
                rotation: int | None = None, fps: int = 12) -> None:
    """A libx264 clip of `frames` (arrays in PyAV's `fmt`), optionally with a display rotation."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = pix_fmt
        if rotation is not None:
            video.set_display_rotation(rotation)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=fmt)
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))


def _displayed_frames(path: Path) -> list[np.ndarray]:
    """Every frame as a player shows it: the stream's display rotation applied (counterclockwise)."""
    with av.open(str(path)) as container:
        return [np.rot90(f.to_ndarray(format="rgb24"), f.rotation // 90) for f in container.decode(video=0)]


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return image[: h * factor, : w * factor].reshape(h, factor, w, factor, -1).astype(np.float64).mean(axis=(1, 3))


def test_rotated_phone_clip_is_displayed_as_the_input(tmp_path: Path, shared_data, exported_onnx) -> None:
    """A portrait clip stored landscape with a -90 degree display matrix stays portrait, same way up."""
    source = photo(shared_data)
    upright = [source[100 + 4 * i : 148 + 4 * i, 90:122] for i in range(3)]  # 48 tall, 32 wide
    clip = tmp_path / "phone.mp4"
    _write_clip(clip, [np.rot90(f, 1) for f in upright], rotation=-90)  # stored 32x48, shown turned clockwise
    shown_in = _displayed_frames(clip)
    assert shown_in[0].shape == (48, 32, 3)  # the clip itself is displayed upright

    out = tmp_path / "phone_x4.mp4"
    assert main(["upscale", str(clip), "-o", str(out), "--onnx", str(exported_onnx)]) == 0
    shown_out = _displayed_frames(out)
    assert len(shown_out) == 3
    assert shown_out[0].shape == (4 * 48, 4 * 32, 3)
    for lr, hr in zip(shown_in, shown_out):
        assert _psnr(_block_mean(hr, 4), lr) > 28.0  # same content, same way up
        assert _psnr(_block_mean(np.rot90(hr, 2), 4), lr) < 20.0  # (the check can tell a wrong turn)


def test_display_matrix_is_applied_like_ffmpeg_autorotate(tmp_path: Path) -> None:
    """Every right-angle rotation and mirror of a display matrix turns frames the way FFmpeg's
    autorotate does (fftools: transpose/hflip/vflip chosen from the matrix)."""
    from av.sidedata.sidedata import Type

    from elan_deploy.batch.video import orientation_from_matrix

    def ffmpeg_autorotate(image: np.ndarray, rotation: float, m: np.ndarray) -> np.ndarray:
        theta = -round(rotation)
        theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
        if abs(theta - 90) < 1:
            return np.rot90(image, 1)[::-1] if m[3] > 0 else np.rot90(image, -1)  # cclock_flip / clock
        if abs(theta - 180) < 1:
            image = image[:, ::-1] if m[0] < 0 else image
            return image[::-1] if m[4] < 0 else image
        if abs(theta - 270) < 1:
            return np.rot90(image, -1)[::-1] if m[3] < 0 else np.rot90(image, 1)  # clock_flip / cclock
        return image[::-1] if m[4] < 0 else image

    image = np.arange(12).reshape(3, 4)
    checked = 0
    for degrees in (90, 180, -90):
        for hflip in (False, True):
            for vflip in (False, True):
                path = tmp_path / "m.mp4"
                with av.open(str(path), "w") as out:
                    video = out.add_stream("libx264", rate=12)
                    video.width, video.height, video.pix_fmt = 32, 16, "yuv420p"
                    video.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
                    frame = av.VideoFrame.from_ndarray(np.zeros((16, 32, 3), np.uint8), format="rgb24")
                    frame.pts = 0
                    out.mux(video.encode(frame))
                    out.mux(video.encode(None))
                with av.open(str(path)) as container:
                    frame = next(container.decode(video=0))
                    side = frame.side_data.get(Type.DISPLAYMATRIX)
                    if side is None:  # the identity is not stored
                        continue
                    matrix = np.frombuffer(bytes(side), dtype=np.int32)
                    orientation = orientation_from_matrix(matrix)
                    assert orientation is not None
                    expected = ffmpeg_autorotate(image, frame.rotation, matrix)
                    assert orientation.apply(image).tolist() == expected.tolist(), (degrees, hflip, vflip)
                    checked += 1
    assert checked >= 10


@pytest.fixture(scope="module")
def truncated(tmp_path_factory, shared_data) -> Path:
    """A 12-frame (1 s) mkv with audio, cut in half: the container still declares 1 s."""
    folder = tmp_path_factory.mktemp("truncated")
    full = folder / "full.mkv"
    make_clip(full, shared_data, frames=12, size=(32, 32))
    cut = folder / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_truncated_video_fails_and_writes_nothing(truncated: Path, tmp_path: Path, exported_onnx, capsys) -> None:
    out = tmp_path / "cut_x4.mp4"
    assert main(["upscale", str(truncated), "-o", str(out), "--onnx", str(exported_onnx)]) == 1
    err = capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())
    assert "of ~12 frames" in err and "of 1.00 s" in err and "--allow-partial" in err
    assert str(out) not in err and out.name not in err  # the summary names no output that was never written


def test_allow_partial_writes_what_decodes_and_says_what_is_missing(truncated: Path, tmp_path: Path, exported_onnx, capsys) -> None:
    out = tmp_path / "cut_x4.mkv"
    assert main(["upscale", str(truncated), "-o", str(out), "--onnx", str(exported_onnx), "--allow-partial"]) == 0
    err = capsys.readouterr().err
    with av.open(str(out)) as container:
        written = sum(1 for _ in container.decode(video=0))
    with av.open(str(truncated)) as container:
        decodable = sum(1 for _ in container.decode(video=0))
    assert 0 < written == decodable < 12
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{written} of ~12 frames" in warnings[0] and "of 1.00 s" in warnings[0]
    assert main(["upscale", str(tmp_path / "none.png"), "-o", str(tmp_path / "x.png"), "--allow-partial"]) == 2


def test_unreadable_video_summary_names_no_output(tmp_path: Path, exported_onnx, capsys) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0\0\0\x18ftypisom" + b"not a movie" * 50)
    out = tmp_path / "broken_x4.mp4"
    assert main(["upscale", str(broken), "-o", str(out), "--onnx", str(exported_onnx)]) == 1
    err = capsys.readouterr().err
    assert "cannot read video" in err and "nothing was written" in err
    assert str(out) not in err and not out.exists()


def _two_level_frames(count: int) -> list[np.ndarray]:
    """rgb48le grays 130.05 and 130.45 (in 8-bit units): one 8-bit level, but 10-bit Y levels apart."""
    frame = np.empty((32, 32, 3), np.uint16)
    frame[:, :16], frame[:, 16:] = round(130.05 * 257), round(130.45 * 257)
    return [frame] * count


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv422p10le", "yuv444p10le"])
def test_bit_depth_and_chroma_are_kept(pix_fmt: str, tmp_path: Path, exported_onnx, capsys) -> None:
    clip = tmp_path / f"{pix_fmt}.mkv"
    _write_clip(clip, _two_level_frames(2), fmt="rgb48le", pix_fmt=pix_fmt)
    out = tmp_path / "out.mkv"
    assert main(["upscale", str(clip), "-o", str(out), "--onnx", str(exported_onnx), "--crf", "0"]) == 0
    assert "warning" not in capsys.readouterr().err
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == pix_fmt
        rgb = frame.to_ndarray(format="rgb48le").astype(np.float64)
    if pix_fmt.endswith("10le"):  # the sub-8-bit step survives: the frames were not rounded to 8 bits
        step = rgb[8:-8, 72:-8].mean() - rgb[8:-8, 8:56].mean()
        assert 0.2 * 257 < step < 0.55 * 257, step  # one 10-bit level (0.29); 0 through 8 bits


def test_encoder_that_cannot_keep_the_format_says_what_changed(tmp_path: Path, exported_onnx, capsys) -> None:
    clip = tmp_path / "deep.mkv"
    _write_clip(clip, _two_level_frames(2), fmt="rgb48le", pix_fmt="yuv444p10le")
    out = tmp_path / "out.mkv"
    assert main(["upscale", str(clip), "-o", str(out), "--onnx", str(exported_onnx), "--codec", "mpeg4"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "yuv444p10le" in line]
    assert len(lines) == 1 and "10-bit 4:4:4" in lines[0] and "8-bit 4:2:0 (yuv420p)" in lines[0], lines
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_frames_trimmed_by_an_edit_list_are_not_missing(tmp_path: Path, shared_data, exported_onnx, capsys) -> None:
    """An MP4 whose edit list trims its first frames declares them in its frame count, yet a
    complete decode skips them: that is not a truncated file."""
    source = photo(shared_data)
    clip = tmp_path / "trimmed.mp4"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for pts in range(-2, 3):  # negative timestamps become an edit list that starts at 0
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(source[100 + 3 * pts : 132 + 3 * pts, 90:122]), format="rgb24")
            frame.pts = pts
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    with av.open(str(clip)) as container:
        assert container.streams.video[0].frames == 5 and sum(1 for _ in container.decode(video=0)) == 3
    out = tmp_path / "trimmed_x4.mp4"
    assert main(["upscale", str(clip), "-o", str(out), "--onnx", str(exported_onnx)]) == 0
    assert "warning" not in capsys.readouterr().err
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3
