"""No data loss and no silent garbage: each test reproduces a way the toolkit once destroyed
user files or handed out a wrong image with exit 0, and checks it no longer does."""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from elan_deploy.cli import main
from elan_deploy.fileio import TMP_MARK, atomic_path, remove_stale_temps, write_bytes_atomic
from elan_deploy.imaging import imresize
from elan_deploy.metrics import psnr
from elan_deploy.runtimes import EngineCache, EngineLoader, ModelSource, ShapeRange
from elan_deploy.runtimes.cache import CacheKey, entry_is_intact
from elan_deploy.upscale import Upscaler

SMALL = "1x3x32x32"


def one_line_error(capsys, code: int, expected_code: int, needle: str) -> str:
    """The command failed with `expected_code` and said why in exactly one line (progress lines aside)."""
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line or "Traceback" in line]
    assert code == expected_code, err
    assert len(err) == 1, err
    assert needle in err[0], err[0]
    return err[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- build --output never removes what the tool did not write ---------------------------------


def test_build_output_dot_leaves_the_folder_alone(exported_onnx, tmp_path, monkeypatch, capsys) -> None:
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / "notes.txt").write_text("mine")
    before = snapshot(project)
    monkeypatch.chdir(project)
    code = main(["build", "--onnx", str(exported_onnx), "--shapes", SMALL, "--output", "."])
    one_line_error(capsys, code, 2, "not an elan-deploy engine")
    assert snapshot(project) == before


def test_build_output_existing_folder_is_refused_then_engine_folder_is_refreshed(exported_onnx, tmp_path, capsys) -> None:
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"not really a photo")
    code = main(["build", "--onnx", str(exported_onnx), "--shapes", SMALL, "--output", str(folder)])
    one_line_error(capsys, code, 2, "not an elan-deploy engine")
    assert snapshot(folder) == {"photo.jpg": b"not really a photo"}

    engine_dir = tmp_path / "engine"
    for _ in range(2):  # an engine folder this tool wrote may be written again
        assert main(["build", "--onnx", str(exported_onnx), "--shapes", SMALL, "--output", str(engine_dir)]) == 0
    assert {p.name for p in engine_dir.iterdir()} == {"model.onnx", "manifest.json"}
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


# -- FP16 keeps the attention logits in FP32 ---------------------------------------------------


def hard_edge_images() -> dict[str, np.ndarray]:
    """HR images with hard edges, where FP16 logits overflowed: QR-like blocks, checkerboard, text-like strokes."""
    rng = np.random.default_rng(7)
    qr = np.kron(rng.random((24, 24)) > 0.5, np.ones((4, 4))) * 255.0
    yy, xx = np.mgrid[0:96, 0:96]
    checker = ((yy // 2 + xx // 2) % 2) * 255.0
    text = np.full((96, 96), 255.0)
    for row in range(8, 88, 12):  # dark glyph-like strokes on white paper
        for col in range(6, 90, 9):
            if rng.random() < 0.7:
                text[row : row + 8, col : col + 2] = 0.0
                text[row + 3 : row + 5, col : col + 6] = 0.0
    return {name: np.repeat(img[..., None], 3, axis=2).astype(np.float32) for name, img in {"qr": qr, "checker": checker, "text": text}.items()}


def test_fp16_island_has_no_fp16_tensor_between_logits_and_softmax(exported_onnx) -> None:
    from elan_deploy.calibration.fp16 import convert_to_fp16, fp16_tensors_between

    fp16 = convert_to_fp16(onnx.load(str(exported_onnx)))
    assert sum(n.op_type == "Softmax" for n in fp16.graph.node) > 0
    assert fp16_tensors_between(fp16) == []


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_fp16_engines_stay_finite_on_hard_edges(runtime, model_source, tmp_path) -> None:
    pytest.importorskip(runtime)
    shapes = ShapeRange.parse("1x3x16x16:1x3x32x32:1x3x32x32")
    cache = EngineCache(tmp_path)
    fp32 = Upscaler(EngineLoader(model_source, runtime, "fp32", shapes, cache_root=cache.root).open(), 4, tile=None)
    fp16 = Upscaler(EngineLoader(model_source, runtime, "fp16", shapes, cache_root=cache.root).open(), 4, tile=None)
    for name, hr in hard_edge_images().items():
        lr = imresize(hr, scale=0.25)[:32, :32]
        hr = hr[: 4 * lr.shape[0], : 4 * lr.shape[1]]
        out32, out16 = fp32(lr), fp16(lr)
        assert np.isfinite(out16).all(), f"{runtime} fp16 gave NaN/Inf on {name}"
        gap = psnr(np.clip(out32, 0, 255), hr) - psnr(np.clip(out16, 0, 255), hr)
        assert abs(gap) <= 1.0, f"{runtime} fp16 on {name}: {gap:.2f} dB from fp32"


# -- NaN never becomes a picture ---------------------------------------------------------------


def nan_onnx(exported_onnx: Path, folder: Path) -> Path:
    model = onnx.load(str(exported_onnx))
    tensor = next(t for t in model.graph.initializer if len(t.dims) == 4)  # a conv weight
    values = onnx.numpy_helper.to_array(tensor).copy()
    values.flat[0] = np.nan
    tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    path = folder / "nan.onnx"
    onnx.save(model, str(path))
    return path


def test_nan_engine_output_is_an_error(exported_onnx, shared_data, tmp_path, capsys) -> None:
    bad = nan_onnx(exported_onnx, tmp_path)
    out = tmp_path / "scores.json"
    code = main(["eval", "--runtime", "onnxruntime", "--onnx", str(bad), "--shapes", "1x3x16x16:1x3x128x128:1x3x512x512",
                 "--data-root", str(shared_data), "--json", str(out)])
    one_line_error(capsys, code, 1, "NaN")
    assert not out.exists()


def test_verification_fails_on_non_finite_output(bundled) -> None:
    from elan_deploy.export.verify import max_error_onnxruntime

    # an "export" whose output is all NaN but of the right shape must never pass as verified
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Mul", ["lr", "nan"], ["q"]), onnx.helper.make_node("Resize", ["q", "", "scales"], ["sr"], mode="nearest")],
        "nan", [onnx.helper.make_tensor_value_info("lr", onnx.TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [onnx.helper.make_tensor_value_info("sr", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array(np.nan, np.float32), "nan"), onnx.numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales")],
    )
    data = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()
    error = max_error_onnxruntime(data, bundled.model, [(1, 16, 16)])
    assert not error <= 1e-3


# -- checkpoints -------------------------------------------------------------------------------


def saved_state(bundled, tmp_path: Path, edit) -> Path:
    state = {k: v.clone() for k, v in bundled.model.state_dict().items()}
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    return path


def test_nan_checkpoint_is_refused(bundled, tmp_path, capsys) -> None:
    def poison(state):
        state["body.3.modules_gmsa.gmsa_0.project_inp.0.weight"].view(-1)[5] = float("nan")

    path = saved_state(bundled, tmp_path, poison)
    code = main(["export", "--model", str(path), "--output", str(tmp_path / "m.onnx")])
    one_line_error(capsys, code, 2, "NaN/Inf")
    assert not (tmp_path / "m.onnx").exists()


def test_wrong_tensor_shape_checkpoint_is_a_one_line_error(bundled, tmp_path, capsys) -> None:
    def reshape(state):
        key = "body.3.modules_gmsa.gmsa_0.project_inp.0.weight"
        state[key] = torch.zeros(state[key].shape[0] + 4, *state[key].shape[1:])

    path = saved_state(bundled, tmp_path, reshape)
    code = main(["export", "--model", str(path), "--output", str(tmp_path / "m.onnx")])
    one_line_error(capsys, code, 2, "has shape")


def test_folder_as_model_says_it_is_a_folder(tmp_path, capsys) -> None:
    code = main(["export", "--model", str(tmp_path), "--output", str(tmp_path / "m.onnx")])
    one_line_error(capsys, code, 2, "is a folder")


# -- the cache: integrity of exports, locking, temporaries ---------------------------------------


def seeded_export(bundled, exported_onnx: Path, folder: Path) -> tuple[ModelSource, Path]:
    """A ModelSource whose work_dir already holds the verified export, as after a first build."""
    from elan_deploy.model.checkpoint import file_sha256

    source = ModelSource(bundled, work_dir=folder)
    path = folder / f"{source.model_id}-{source.fingerprint()[:16]}.fp32.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(exported_onnx.read_bytes())
    write_bytes_atomic(path.with_name(path.name + ".sha256"), file_sha256(path).encode())
    return source, path


@pytest.mark.parametrize("damage", ["bitflip", "truncate"])
def test_damaged_intermediate_onnx_is_exported_again(damage, bundled, exported_onnx, tmp_path) -> None:
    source, path = seeded_export(bundled, exported_onnx, tmp_path / "onnx")
    assert source.onnx_path() == path  # trusted as is: no re-export
    data = bytearray(path.read_bytes())
    if damage == "bitflip":
        data[len(data) // 2] ^= 0x10
    else:
        data = data[: len(data) // 3]
    path.write_bytes(bytes(data))
    fresh = ModelSource(bundled, work_dir=tmp_path / "onnx")
    with pytest.warns(UserWarning, match="does not match its recorded sha256"):
        assert fresh.onnx_path() == path
    assert path.read_bytes() == exported_onnx.read_bytes()  # the export is deterministic


def test_engine_built_from_another_onnx_is_rebuilt(bundled, exported_onnx, tmp_path) -> None:
    from elan_deploy.model.checkpoint import file_sha256

    source, path = seeded_export(bundled, exported_onnx, tmp_path / "onnx")
    cache = EngineCache(tmp_path / "engines")
    entry = EngineLoader(source, "onnxruntime", "fp32", ShapeRange.parse(SMALL), cache_root=cache.root).build()
    assert source.onnx_sha256() in (entry / "manifest.json").read_text()
    # the verified export changes (e.g. a fixed exporter); engines built from the old one are stale
    model = onnx.load(str(path))
    model.doc_string = "re-exported"
    onnx.save(model, str(path))
    write_bytes_atomic(path.with_name(path.name + ".sha256"), file_sha256(path).encode())
    again = ModelSource(bundled, work_dir=tmp_path / "onnx")
    with pytest.warns(UserWarning, match="stale"):
        rebuilt = EngineLoader(again, "onnxruntime", "fp32", ShapeRange.parse(SMALL), cache_root=cache.root).build()
    assert entry_is_intact(rebuilt) and (rebuilt / "model.onnx").read_bytes() == path.read_bytes()


def _store_many(args: tuple[str, int, int]) -> tuple[int, int]:
    """Worker: store `count` entries among `keys` keys; returns (errors, builds)."""
    root, count, seed = args
    rng = np.random.default_rng(seed)
    cache = EngineCache(Path(root))
    errors = builds = 0
    for _ in range(count):
        key = CacheKey("fp", "fp32", "1x3x16x16", "fake", "1", str(int(rng.integers(0, 5))))

        def build(folder: Path) -> None:
            nonlocal builds
            builds += 1
            (folder / "engine.bin").write_bytes(key.options.encode() * 1000)

        try:
            entry = cache.lookup(key) or cache.store(key, build)
            assert (entry / "engine.bin").read_bytes() == key.options.encode() * 1000
        except Exception:  # noqa: BLE001 - the stress counts every failure
            errors += 1
    return errors, builds


def test_concurrent_stores_never_fail_and_build_each_entry_once(tmp_path) -> None:
    jobs = [(str(tmp_path), 100, seed) for seed in range(8)]
    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(_store_many, jobs))
    threads_result: list[tuple[int, int]] = []
    workers = [threading.Thread(target=lambda s=s: threads_result.append(_store_many((str(tmp_path), 50, 100 + s)))) for s in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sum(e for e, _ in results + threads_result) == 0
    assert sum(b for _, b in results + threads_result) == 5  # five keys, each built once
    entries = [p for p in (tmp_path / "fake").iterdir() if p.is_dir()]
    assert len(entries) == 5 and all(entry_is_intact(e) for e in entries)
    assert not [p for p in tmp_path.rglob("*") if TMP_MARK in p.name]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path) -> None:
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale_file = tmp_path / f".model.onnx.{TMP_MARK}{dead}-abc.tmp.onnx"
    stale_dir = tmp_path / f".engine.{TMP_MARK}{dead}-abc.tmp"
    live = tmp_path / f".model.onnx.{TMP_MARK}{os.getpid()}-abc.tmp.onnx"
    users = tmp_path / ".model.onnx.backup"  # not ours: never touched
    stale_file.write_bytes(b"half")
    stale_dir.mkdir()
    live.write_bytes(b"in progress")
    users.write_bytes(b"mine")
    with atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"whole")
    assert not stale_file.exists() and live.exists() and users.exists()
    assert remove_stale_temps(tmp_path) == 1 and not stale_dir.exists()
    assert (tmp_path / "model.onnx").read_bytes() == b"whole"


def test_cache_lives_inside_elan_deploy_cache_with_the_users_umask(bundled, exported_onnx, tmp_path, monkeypatch) -> None:
    root = tmp_path / "cache-root"
    monkeypatch.setenv("ELAN_DEPLOY_CACHE", str(root))
    seeded_export(bundled, exported_onnx, root / "onnx")  # as a first build leaves it
    old = os.umask(0o022)
    try:
        assert main(["build", "--shapes", SMALL]) == 0
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache-root"]
    assert {p.name for p in root.iterdir()} >= {"engines", "onnx"}
    entry = next(p for p in (root / "engines" / "onnxruntime").iterdir() if p.is_dir())
    assert stat.S_IMODE(entry.stat().st_mode) == 0o755


# -- one-line errors for bad ONNX files --------------------------------------------------------


@pytest.mark.parametrize(("content", "needle"), [(b"", "empty (0 bytes)"), (b"\x08\x07garbage\xff\xff", "cannot parse")])
def test_bad_onnx_files_are_one_line_errors(content, needle, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    for command in (["build", "--onnx", str(bad)], ["info", str(bad)]):
        one_line_error(capsys, main(command), 2, needle)


def test_onnx_with_external_data_builds(bundled, exported_onnx, tmp_path) -> None:
    folder = tmp_path / "ext"
    folder.mkdir()
    model = onnx.load(str(exported_onnx))
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    assert (folder / "m.onnx.data").stat().st_size > 1_000_000
    x = np.random.default_rng(0).uniform(60, 200, (1, 3, 32, 32)).astype(np.float32)
    reference = EngineLoader(ModelSource(bundled, onnx=exported_onnx), "onnxruntime", "fp32", ShapeRange.parse(SMALL), cache_root=tmp_path / "a").open()
    engine = EngineLoader(ModelSource(bundled, onnx=folder / "m.onnx"), "onnxruntime", "fp32", ShapeRange.parse(SMALL), cache_root=tmp_path / "b").open()
    (folder / "m.onnx.data").unlink()  # the engine stands alone: its copy holds the weights
    np.testing.assert_array_equal(engine(x), reference(x))


def test_missing_external_data_is_a_one_line_error(exported_onnx, tmp_path, capsys) -> None:
    onnx.save(onnx.load(str(exported_onnx)), str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.data", size_threshold=0)
    (tmp_path / "w.data").unlink()
    one_line_error(capsys, main(["build", "--onnx", str(tmp_path / "m.onnx")]), 2, "'w.data', which is missing")


def test_library_scratch_engines_are_removed_at_exit(exported_onnx, tmp_path) -> None:
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from elan_deploy.model import load_bundled; "
        "from elan_deploy.runtimes import EngineLoader, ModelSource, ShapeRange; from elan_deploy.scratch import process_scratch_dir; "
        f"source = ModelSource(load_bundled(), onnx=Path({str(exported_onnx)!r})); "
        f"print(EngineLoader(source, 'onnxruntime', 'fp32', ShapeRange.parse('{SMALL}'), cache_root=process_scratch_dir()).build())"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    engine = Path(result.stdout.strip().splitlines()[-1])
    assert engine.is_relative_to(tmp_path) and not engine.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("elan-deploy")] == []  # (ONNX Runtime leaves its own .ses)


# -- a rerun of a finished video skips it; another video's or the user's file is kept ----------


def tiny_clip(path: Path, shared: Path, frames: int = 3, size: tuple[int, int] = (16, 32)) -> None:
    """An H.264 clip of a slowly panning natural photo, no audio."""
    av = pytest.importorskip("av")
    from PIL import Image

    photo = np.asarray(Image.open(shared / "Set5/HR/baby.png").convert("RGB"))
    h, w = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=frames)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[100 + 2 * i : 100 + 2 * i + h, 90 : 90 + w]), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_rerun_of_a_finished_video_skips_it(exported_onnx, shared_data, tmp_path, capsys) -> None:
    clip, out = tmp_path / "clip.mp4", tmp_path / "clip_x4.mp4"
    tiny_clip(clip, shared_data)
    argv = ["upscale", str(clip), "-o", str(out), "--onnx", str(exported_onnx), "--runtime", "onnxruntime"]
    assert main(argv) == 0
    written = out.read_bytes()
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 video(s): 0 done, 1 skipped (complete output exists)" in capsys.readouterr().err
    assert out.read_bytes() == written
    # other encoder settings: not this run's output, so not replaced without --overwrite
    one_line_error(capsys, main([*argv, "--crf", "30"]), 2, "with other settings")
    assert out.read_bytes() == written
    tiny_clip(out, shared_data, frames=2)  # the user's own clip under that name
    mine = out.read_bytes()
    one_line_error(capsys, main(argv), 2, "did not write")
    assert out.read_bytes() == mine


# -- every writer: a file the tool did not write is refused before any work, its own is replaced --


def user_file(path: Path, text: str = "my notes") -> Path:
    path.write_text(text)
    return path


def test_writers_refuse_a_file_they_did_not_write_before_any_work(exported_onnx, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ELAN_DEPLOY_CACHE", str(tmp_path / "cache"))
    notes = user_file(tmp_path / "notes.json")
    model = user_file(tmp_path / "model.onnx", "not a model")
    onnx_args = ["--onnx", str(exported_onnx)]
    for argv, needle in [
        (["eval", "--runtime", "onnxruntime", *onnx_args, "--json", str(notes)], "--json"),
        (["export", "--output", str(model)], "--output"),
        (["export", "--output", str(tmp_path / "new.onnx"), "--json", str(notes)], "--json"),
        (["quantize", *onnx_args, "--output", str(model)], "--output"),
        (["quantize", *onnx_args, "--output", str(tmp_path / "new.onnx"), "--json", str(notes)], "--json"),
        (["info", str(exported_onnx), "--json", str(notes)], "--json"),
        (["loadtest", "127.0.0.1:1", "--json", str(notes)], "--json"),  # refused before it connects
    ]:
        line = one_line_error(capsys, main(argv), 2, "exists and elan-deploy did not write it")
        assert needle in line and "--overwrite" in line, line
    assert notes.read_text() == "my notes" and model.read_text() == "not a model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "notes.json"], "something was built or written"


def test_writers_replace_their_own_files_and_any_file_with_overwrite(exported_onnx, shared_data, tmp_path, capsys) -> None:
    import json

    from elan_deploy.provenance import written_by_elan_deploy

    hr = tmp_path / "hr"
    hr.mkdir()
    from PIL import Image

    Image.open(shared_data / "Set5/HR/baby.png").crop((100, 100, 164, 164)).save(hr / "crop.png")
    out = tmp_path / "scores.json"
    eval_argv = ["eval", "--runtime", "onnxruntime", "--onnx", str(exported_onnx), "--dataset", str(hr), "--json", str(out)]
    info_argv = ["info", str(exported_onnx), "--json", str(tmp_path / "info.json")]
    for argv in (eval_argv, info_argv):
        assert main(argv) == 0 and main(argv) == 0  # the same command again replaces its own file
    user_file(out)
    assert main(eval_argv) == 2 and main([*eval_argv, "--overwrite"]) == 0
    assert json.loads(out.read_text())["schema"] == "elan-deploy/results/1"
    assert json.loads((tmp_path / "info.json").read_text())["schema"] == "elan-deploy/info/1"
    assert written_by_elan_deploy(exported_onnx)  # an export carries its metadata: `export` may replace it
    capsys.readouterr()


def test_bench_never_replaces_a_report_it_did_not_write(shared_data, tmp_path, capsys) -> None:
    dataset = tmp_path / "one"
    dataset.mkdir()
    (dataset / "bird.png").write_bytes((shared_data / "Set5/HR/bird.png").read_bytes())
    out = tmp_path / "out"
    argv = ["bench", "--runtime", "torch", "--precision", "fp32", "--shapes", "1x3x16x16", "--time-limit", "0.001",
            "--dataset", str(dataset), "--output", str(out)]
    out.mkdir()
    report = user_file(out / "report.md", "# my own report")
    one_line_error(capsys, main(argv), 2, "did not write")
    assert report.read_text() == "# my own report" and sorted(p.name for p in out.iterdir()) == ["report.md"]
    report.unlink()
    assert main(argv) == 0
    written = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert {"results.json", "report.md"} <= written
    assert main(argv) == 0  # a rerun replaces what the first run wrote


def test_a_write_killed_before_its_file_lands_leaves_the_old_file_recognised(tmp_path) -> None:
    """The record lands before the file: whichever file is at the name after a kill still matches a record."""
    import subprocess
    import sys

    from elan_deploy.provenance import matching_record, written_by_elan_deploy

    out = tmp_path / "out.bin"
    script = ("import sys; from elan_deploy.provenance import recorded_path\n"
              "with recorded_path(sys.argv[1], {'run': sys.argv[2]}) as tmp: tmp.write_text(sys.argv[2])")

    def write(text: str, kill: bool = False) -> int:
        env = {**os.environ, "ELAN_DEPLOY_KILL_AT": "publish:out.bin"} if kill else None
        return subprocess.run([sys.executable, "-c", script, str(out), text], env=env, timeout=60).returncode

    assert write("first") == 0
    assert write("second", kill=True) == -9
    assert out.read_text() == "first" and written_by_elan_deploy(out)
    assert matching_record(out).tag == {"run": "first"}
    assert write("third") == 0
    assert matching_record(out).tag == {"run": "third"}
    out.write_text("first")  # the user's bytes, even equal to an earlier run's, no longer match a kept record
    assert not written_by_elan_deploy(out)
