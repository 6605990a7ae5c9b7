"""Plain helpers shared by the test modules; the fixtures are in conftest.py.

Network-output tests use natural images only: ELAN's unscaled q·qᵀ attention blows uniform
noise up to ~1e5, which makes any numeric comparison meaningless.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elan_deploy.cpu import CpuCaps, parse_flags

ROOT = Path(__file__).resolve().parents[1]  # the repository: `python -m experiments.NAME` runs from here
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SET5 = SHARED_DATA / "Set5"
SET5_NAMES = ("baby", "bird", "butterfly", "head", "woman")

needs_set5 = pytest.mark.skipif(
    not (SET5 / "HR").is_dir() or not (SET5 / "LR_bicubic").is_dir(),
    reason=f"Set5 HR/LR_bicubic not found under {SET5}",
)


class StepRecorder:
    """A `console.StepProgress` that keeps what it was told: the steps started, and how far they got."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.completed: list[int] = []
        self.totals: list[int] = []

    def start(self, description: str, total: int | None) -> None:
        self.started.append((description, total))

    def update(self, completed: int | None = None, total: int | None = None, description: str | None = None) -> None:
        if completed is not None:
            self.completed.append(completed)
        if total is not None:
            self.totals.append(total)


# --- natural images ---------------------------------------------------------------------------

def natural_crop(shared: Path, height: int, width: int, image: str = "Set5/HR/baby.png", top: int = 40, left: int = 60) -> np.ndarray:
    """A HxWx3 float32 0..255 crop of a real photograph."""
    array = np.asarray(Image.open(shared / image).convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(array[top : top + height, left : left + width])


def natural_batch(batch: int, height: int, width: int) -> np.ndarray:
    """N,3,H,W float32 0..255 crops of T91/t46.png (508x233), a different crop per sample."""
    source = SHARED_DATA / "T91" / "t46.png"
    if not source.is_file():
        pytest.skip(f"natural test images missing ({source})")
    img = np.asarray(Image.open(source).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    _, full_h, full_w = img.shape
    assert height <= full_h and width <= full_w
    crops = []
    for i in range(batch):
        top, left = (17 + 29 * i) % (full_h - height + 1), (23 + 71 * i) % (full_w - width + 1)
        crops.append(img[:, top : top + height, left : left + width])
    return np.ascontiguousarray(np.stack(crops))


def photo_crop(shared_data: Path, height: int, width: int) -> np.ndarray:
    """A uint8 crop of a B100 photograph."""
    return natural_crop(shared_data, height, width, "B100/HR/img_010.png", top=10, left=20).astype(np.uint8)


# --- what a command printed ---------------------------------------------------------------------

_PROGRESS_LINE = re.compile(r"^\[\d+:\d\d(:\d\d)?\] ")


def message_lines(err: str) -> list[str]:
    """The non-empty lines of a command's stderr, without the plain progress lines of a non-terminal
    and the line that says which engine `--runtime auto` picked."""
    return [line for line in err.splitlines() if line.strip() and not _PROGRESS_LINE.match(line) and not line.startswith("--runtime auto:")]


def one_line(exc: BaseException) -> str:
    """The message of `exc`, checked to be one non-empty line."""
    text = str(exc)
    assert "\n" not in text and text, text
    return text


# --- batch, Ray and video inputs: small natural images, corrupt files, a short clip with audio ----

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


# --- the CPUs a benchmark plan is judged for, and a changed results document ---------------------

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
X86 = platform.machine().lower() in ("x86_64", "amd64")
AVX2 = CpuCaps(parse_flags("avx2 fma"))
ZEN4 = CpuCaps(parse_flags("avx2 avx512f avx512_vnni avx512_bf16"))
SAPPHIRE_RAPIDS = CpuCaps(parse_flags("avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8"))


def changed_results(doc: dict, p50_factor: float, psnr_delta_db: float = 0.0) -> dict:
    """A copy of a results document with every p50 scaled and every PSNR shifted."""
    changed = json.loads(json.dumps(doc))
    for row in changed["rows"]:
        if row["kind"] == "latency":
            row["p50_ms"] *= p50_factor
        if row["kind"] == "quality":
            row["psnr"] += psnr_delta_db
    return changed


# --- engines and graphs ----------------------------------------------------------------------------

def needs(runtime: str) -> None:
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO not installed: pip install 'elan-deploy[openvino]'")


def graph_names(onnx_path, names: list[str]) -> list[str]:
    """`names` as they stand in the file: a node of a range-guarded module sits under its `layer`
    (`/tail/Conv` -> `/tail/layer/Conv`). Fails when a name is in neither form."""
    import onnx

    present = {n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    found = []
    for name in names:
        scope, _, op = name.rpartition("/")
        guarded = f"{scope}/layer/{op}"
        assert name in present or guarded in present, f"no node {name} in {onnx_path}"
        found.append(name if name in present else guarded)
    return found


# --- `elan-deploy serve` in a subprocess, and the processes it leaves -----------------------------

MODEL = "elan-light-x4"
STARTUP_S = 180


def descendants(pid: int) -> dict[int, str]:
    """{pid: command name} of every live descendant of `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        names[int(entry.name)] = name
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = names[child]
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_nothing_left(children: dict[int, str], wait_s: float = 15) -> None:
    """Every process `serve` started (tritonserver, the Python-backend stub) is gone after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: name for pid, name in children.items() if alive(pid)}
    assert not left, f"processes left after serve exited: {left}"


@contextlib.contextmanager
def running_serve(onnx: Path, log: Path, *flags: str, ready_s: float = STARTUP_S) -> Iterator[dict]:
    """`elan-deploy serve` in a subprocess on free loopback ports, yielded once its model is ready; stopped after."""
    import tritonclient.http as httpclient

    from elan_deploy.serve.server import free_loopback_ports as free_ports

    http_port, grpc_port, metrics_port = free_ports(3)
    command = [
        sys.executable, "-m", "elan_deploy.cli", "serve", "--onnx", str(onnx),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), *flags,
    ]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ))
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    deadline = time.monotonic() + ready_s
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if client.is_model_ready(MODEL):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve not ready after {ready_s} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        parameters = client.get_model_config(MODEL)["parameters"]
        client.close()  # an open connection would hold Triton's shutdown for its exit timeout
        yield {"proc": proc, "http": http_port, "grpc": grpc_port, "metrics": metrics_port, "log": log,
               "children": descendants(proc.pid), "workspace": Path(parameters["workspace-path"]["string_value"])}
    finally:
        client.close()
        if proc.poll() is None:  # a failed test left it running
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
