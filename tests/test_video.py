"""Video through the Upscaler with PyAV (issue 16 item 3): frames, rate, duration and audio kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elan_deploy.cli import main
from elan_deploy.runtimes import ShapeRange, open_engine
from elan_deploy.upscale import Upscaler
from tests.batch_inputs import make_clip

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
    engine = open_engine(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x16x16:1x3x192x320:4x3x512x512"))
    reference = Upscaler(engine, 4).upscale_uint8(src["first"])
    assert _psnr(up["first"], reference) > 36.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left"


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
