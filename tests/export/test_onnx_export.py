"""ONNX export of DeployELAN: equality with the reference in PyTorch, ONNX Runtime and OpenVINO,
graph checks, determinism and atomic writes (the `export` and `info` commands: tests/commands).

Three shift × attention combinations per window strategy (together covering every shift and
every attention form with both gather windows, the default, and reshape windows) are exported
once per module (at 1x3x32x48 with dynamic axes) and every test shape runs on that one file;
reference outputs are computed once and shared. Inputs are crops of real photos, never uniform
noise. Output bounds are relative to the output's magnitude (`within`), since
float32 kernels sum in an ISA-dependent order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from elan_deploy.errors import ElanDeployError
from elan_deploy.export import (
    ExportConfig,
    build_deploy_model,
    export_onnx,
    read_metadata,
    summarize,
    tensor_ranks,
)
from elan_deploy.export.strategies import DEFAULT_WINDOWS
from elan_deploy.model import LoadedCheckpoint, load_bundled
from tests.helpers import natural_batch

# max |Δ| relative to the largest output value (at least 1): 2.6e-3 on the 0..255 scale, about
# 80 float32 eps at that magnitude after ~150 layers (measured here: ~4e-7 relative)
RELATIVE_TOL = 1e-5
EXPORT_SIZE = (32, 48)  # traced size; deliberately not one of the test shapes
SHAPES = [(1, 16, 16), (1, 48, 80), (1, 64, 64), (1, 192, 320), (2, 48, 80)]
OPENVINO_SHAPES = [(1, 64, 64), (2, 48, 80)]
COMBOS = [
    ("depthwise", "shared", "gather"),
    # the other forms: an export each, so with `-m slow` (the default suite keeps the default form;
    # every form's modules are checked against the reference in tests/export/test_rewrites.py)
    pytest.param("slice", "sdpa", "gather", marks=pytest.mark.slow),
    pytest.param("dense", "sdpa", "gather", marks=pytest.mark.slow),
    pytest.param("depthwise", "shared", "reshape", marks=pytest.mark.slow),
    pytest.param("slice", "sdpa", "reshape", marks=pytest.mark.slow),
    pytest.param("dense", "shared", "reshape", marks=pytest.mark.slow),
]
# OpenVINO 2026.4 at 1x3x192x320 (f32) lists 1096 data-movement nodes for the reshape-window export
# and executes 614 of them; the gather form must execute at most a third of what reshape does.
RESHAPE_WINDOWS_DATA_MOVEMENT = 1096


@pytest.fixture(scope="module")
def loaded() -> LoadedCheckpoint:
    return load_bundled()


@pytest.fixture(scope="module")
def inputs() -> dict[tuple[int, int, int], np.ndarray]:
    return {shape: natural_batch(*shape) for shape in SHAPES}


@pytest.fixture(scope="module")
def expected(loaded: LoadedCheckpoint, inputs: dict) -> dict[tuple[int, int, int], np.ndarray]:
    """Reference ELAN outputs, computed once for all combinations."""
    with torch.no_grad():
        return {shape: loaded.model(torch.from_numpy(x)).numpy() for shape, x in inputs.items()}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def exported(loaded: LoadedCheckpoint, export_dir: Path):
    """combo → (path, report), exported lazily and once per module."""
    cache: dict[tuple[str, str, str], tuple[Path, object]] = {}

    def get(shift: str, attention: str, windows: str = DEFAULT_WINDOWS) -> tuple[Path, object]:
        if (shift, attention, windows) not in cache:
            path = export_dir / f"{shift}-{attention}-{windows}.onnx"
            # the tests below compare every shape against the reference, so the built-in check is skipped
            config = ExportConfig(shift=shift, attention=attention, windows=windows, trace_size=EXPORT_SIZE, verify=False)
            cache[(shift, attention, windows)] = (path, export_onnx(loaded, path, config))
        return cache[(shift, attention, windows)]

    return get


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def within(got: np.ndarray, expected: np.ndarray, relative: float = RELATIVE_TOL) -> bool:
    """Finite and max |Δ| ≤ relative × max(1, max |expected|)."""
    return bool(np.isfinite(got).all()) and max_diff(got, expected) <= relative * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("shift,attention,windows", COMBOS)
def test_deploy_model_matches_reference_in_torch(loaded, inputs, expected, shift: str, attention: str, windows: str) -> None:
    deploy = build_deploy_model(loaded.model, shift, attention, windows)
    with torch.no_grad():
        for shape, x in inputs.items():
            assert within(deploy(torch.from_numpy(x)).numpy(), expected[shape]), shape


@pytest.mark.parametrize("shift,attention,windows", COMBOS)
def test_onnxruntime_matches_reference(exported, inputs, expected, shift: str, attention: str, windows: str) -> None:
    import onnxruntime as ort

    path, report = exported(shift, attention, windows)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape, x in inputs.items():
        (y,) = session.run(["sr"], {"lr": x})
        assert within(y, expected[shape]), shape


@pytest.mark.parametrize("shift,attention,windows", COMBOS)
def test_openvino_matches_reference(exported, inputs, expected, shift: str, attention: str, windows: str) -> None:
    ov = pytest.importorskip("openvino")
    path, _ = exported(shift, attention, windows)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    for shape in OPENVINO_SHAPES:
        y = request.infer({0: inputs[shape]})[compiled.output(0)]
        assert within(y, expected[shape]), shape


def _openvino_profiled(path: Path):
    """`path` compiled by OpenVINO's CPU plugin at 1x3x192x320, f32, 1 thread, after one inference with PERF_COUNT."""
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.input(0): ov.PartialShape([1, 3, 192, 320])})
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "PERF_COUNT": True}
    compiled = core.compile_model(model, "CPU", config)
    compiled.create_infer_request().infer({0: natural_batch(1, 192, 320)})
    return compiled


def _openvino_data_movement(path: Path) -> tuple[int, int]:
    """(listed, executed) data-movement nodes of OpenVINO's CPU plugin for `path` at 1x3x192x320, f32."""
    from elan_deploy.runtimes.openvino_graph import data_movement, layer_counts

    compiled = _openvino_profiled(path)
    return data_movement(layer_counts(compiled)), data_movement(layer_counts(compiled, executed_only=True))


@pytest.mark.slow  # two OpenVINO profiles; the numbers behind it are in BENCHMARKS.md
def test_gather_windows_execute_a_third_of_the_data_movement_in_openvino(exported) -> None:
    """Gather windows, compiled static: at most 1/3 of the data-movement nodes reshape windows execute."""
    default = ExportConfig()
    path, _ = exported(default.shift, default.attention, "gather")
    reshape_path, _ = exported(default.shift, default.attention, "reshape")
    (_, moved), (listed, baseline) = _openvino_data_movement(path), _openvino_data_movement(reshape_path)
    assert 3 * moved <= baseline, (moved, baseline)
    # the counter sees the baseline's chains: it lists the 1096 nodes of the first profile and runs most of them
    assert listed >= RESHAPE_WINDOWS_DATA_MOVEMENT * 9 // 10 and baseline > listed // 2, (listed, baseline)


@pytest.mark.slow  # an OpenVINO profile
def test_node_times_keep_the_shifts_out_of_the_compute_share(exported) -> None:
    """The profile's compute floor: the 48 one-hot depthwise shifts of the 24 LFEs are found by
    their primitive and counted apart from the convolutions that do arithmetic."""
    from elan_deploy.runtimes.openvino_graph import node_times

    default = ExportConfig()
    path, _ = exported(default.shift, default.attention, default.windows)
    times = node_times(_openvino_profiled(path))
    assert times.shift_nodes == 48 and 0 < times.shift_us < times.per_type_us["Convolution"], times
    assert times.per_type_us["MatMul"] > 0 and times.per_type_us["Softmax"] > 0, times.per_type_us
    assert 0 < times.compute_share() < 1, times.compute_share()
    # node kinds split the same time by kernel and shape: the shifts are 1x3x192x320 depthwise kernels
    for layer, us in times.per_type_us.items():
        assert sum(t for k, t in times.per_kind_us.items() if k.layer == layer) == pytest.approx(us), layer
    shifts = [k for k in times.per_kind_us if "_dw" in k.primitive]
    assert sum(times.per_kind_nodes[k] for k in shifts) == 48 and {k.layer for k in shifts} == {"Convolution"}, shifts
    assert all(k.shape.endswith(",192,320]") for k in shifts), shifts


@pytest.mark.parametrize("shift,attention,windows", COMBOS)
def test_graph_is_rank5_default_domain_and_described(exported, loaded, shift: str, attention: str, windows: str) -> None:
    path, report = exported(shift, attention, windows)
    model = onnx.load(str(path))
    ranks = tensor_ranks(model, {"lr": (1, 3, 192, 320)})
    assert ranks.unknown == ()
    assert ranks.max_rank <= 5
    summary = summarize(model)
    assert summary.default_domain_only
    assert [(t.name, t.shape) for t in summary.inputs] == [("lr", ("N", 3, "H", "W"))]
    assert [t.name for t in summary.outputs] == ["sr"]
    assert "Pad" not in summary.op_counts or shift == "slice"  # no image padding inside the graph
    meta = read_metadata(path)
    assert (meta.shift, meta.attention, meta.windows, meta.scale, meta.window_multiple) == (shift, attention, windows, 4, 16)
    assert (meta.input_range, meta.opset, meta.checkpoint_sha256) == ("0..255", 17, loaded.sha256)
    assert report.node_count == len(model.graph.node)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_rank_check_catches_rank_6(tmp_path: Path) -> None:
    class Rank6(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            return x.view(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, c)

    path = tmp_path / "rank6.onnx"
    torch.onnx.export(Rank6(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, input_names=["lr"],
                      dynamic_axes={"lr": {2: "H", 3: "W"}})
    ranks = tensor_ranks(onnx.load(str(path)), {"lr": (1, 3, 16, 16)})
    assert ranks.max_rank == 6 and not ranks.within(5)


def test_export_is_byte_identical(exported, loaded, tmp_path: Path) -> None:
    path, report = exported("depthwise", "shared")
    again = tmp_path / "again.onnx"
    config = ExportConfig(trace_size=EXPORT_SIZE, verify=False)
    second = export_onnx(loaded, again, config)
    assert again.read_bytes() == path.read_bytes()
    assert second.sha256 == report.sha256


@pytest.mark.slow  # a second export; opset 17 is the default
def test_export_opset23_fuses_attention(loaded, inputs, expected, tmp_path: Path) -> None:
    import onnxruntime as ort

    path = tmp_path / "op23.onnx"
    report = export_onnx(loaded, path, ExportConfig(attention="sdpa", opset=23, trace_size=EXPORT_SIZE, verify=False))
    assert report.attention_ops == 72  # 24 GMSAs x 3 window sizes, on rank-4 (batch, windows, tokens, c)
    model = onnx.load(str(path))
    assert summarize(model).default_domain_only and "Softmax" not in summarize(model).op_counts
    assert tensor_ranks(model, {"lr": (1, 3, 192, 320)}).max_rank <= 5
    shape = (2, 48, 80)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert within(session.run(None, {"lr": inputs[shape]})[0], expected[shape])
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert within(compiled.create_infer_request().infer({0: inputs[shape]})[compiled.output(0)], expected[shape])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_verification_fails_on_nan(loaded, tmp_path: Path) -> None:
    """A graph whose output is NaN must not verify (max(worst, nan) would keep worst = 0)."""
    import io

    from elan_deploy.export.verify import max_error_onnxruntime

    class Upscale(torch.nn.Module):
        def __init__(self, poison: float) -> None:
            super().__init__()
            self.poison = poison

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest") * self.poison

    def onnx_bytes(poison: float) -> bytes:
        buffer = io.BytesIO()
        torch.onnx.export(Upscale(poison), (torch.zeros(1, 3, 16, 16),), buffer, dynamo=False, input_names=["lr"],
                          dynamic_axes={"lr": {0: "N", 2: "H", 3: "W"}})
        return buffer.getvalue()

    shapes = [(1, 16, 16), (2, 16, 32)]
    finite = max_error_onnxruntime(onnx_bytes(1.0), loaded.model, shapes)
    assert 0.0 < finite < float("inf")  # a wrong but finite model gets a finite, non-zero error
    assert max_error_onnxruntime(onnx_bytes(float("nan")), loaded.model, shapes) == float("inf")
    assert max_error_onnxruntime(onnx_bytes(float("inf")), loaded.model, shapes) == float("inf")


def _folder_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("stage", ["trace_to_onnx", "check_graph"])  # first and last step inside the temp file's lifetime
def test_failed_export_leaves_no_file(loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    import elan_deploy.export.onnx_export as onnx_export

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"injected failure in {stage}")

    monkeypatch.setattr(onnx_export, stage, boom)
    target = tmp_path / "model.onnx"
    config = ExportConfig(trace_size=EXPORT_SIZE, verify=False)
    with pytest.raises(RuntimeError, match="injected"):
        export_onnx(loaded, target, config)
    assert _folder_listing(tmp_path) == []
    if stage == "trace_to_onnx":  # cheap: an existing file survives a failed re-export untouched
        target.write_bytes(b"previous")
        with pytest.raises(RuntimeError, match="injected"):
            export_onnx(loaded, target, config)
        assert target.read_bytes() == b"previous"
        assert _folder_listing(tmp_path) == ["model.onnx"]


def test_unwritable_output_is_a_user_error(loaded, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ElanDeployError):
        export_onnx(loaded, blocker / "model.onnx", ExportConfig(verify=False))
    with pytest.raises(ElanDeployError):
        export_onnx(loaded, tmp_path / "missing" / "model.onnx", ExportConfig(verify=False))
    assert _folder_listing(tmp_path) == ["not-a-folder"]


def test_bad_config_is_a_user_error() -> None:
    with pytest.raises(ElanDeployError):
        ExportConfig(opset=9)
    with pytest.raises(ElanDeployError):
        ExportConfig(trace_size=(30, 48))
    with pytest.raises(ElanDeployError):
        ExportConfig(shift="nope")
