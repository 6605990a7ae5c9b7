"""INT8 Q/DQ ONNX: TensorRT's explicit-quantization rules, determinism, budget, runs on ORT.

Fast settings throughout (few small patches, the bundled T91 subset, a loose budget); the
real recipe's figures come from `experiments/int8_search.py`, never from these tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from elan_deploy.calibration.data import BUNDLED_SAMPLES
from elan_deploy.calibration.int8 import QuantizeConfig, int8_onnx_for, write_int8
from elan_deploy.calibration.sensitivity import BudgetNotMet
from elan_deploy.export.metadata import read_props
from tests.helpers import natural_crop

# six crops: all-INT8 meets the budget, no search; the hard-edge floor has its own test
FAST = QuantizeConfig(patches=6, patch_size=32, heldout_size=32, budget_db=4.0, hard_edge_floor_db=None)


@pytest.fixture(scope="module")
def int8_file(exported_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    report = write_int8(exported_onnx, out, FAST, calib_dir=BUNDLED_SAMPLES, cache_dir=out.parent / "cache")
    assert report.met
    return out


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_qdq_graph_follows_tensorrt_explicit_quantization_rules(int8_file) -> None:
    model = onnx.load(str(int8_file))
    inits = _initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert qs and dqs
    for node in qs + dqs:
        zero_point = inits[node.input[2]]
        assert not zero_point.any(), f"{node.name}: zero point must be 0"
    for node in qs:
        assert inits[node.input[2]].dtype == np.int8
        assert inits[node.input[1]].ndim == 0, f"{node.name}: activations must have one per-tensor scale"
    quantized_ops = set()
    for dq in dqs:
        source = dq.input[0]
        readers = consumers.get(dq.output[0], [])
        quantized_ops |= {r.op_type for r in readers}
        if source in inits:  # a weight or a bias
            weight = inits[source]
            if weight.dtype == np.int32:  # conv bias: scale = input scale x weight scale
                assert all(r.op_type == "Conv" for r in readers)
                continue
            assert weight.dtype == np.int8
            scale = inits[dq.input[1]]
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            assert scale.shape == (weight.shape[0],) and axis == 0, f"{dq.name}: conv weights per output channel"
            assert all(r.op_type == "Conv" for r in readers)
        else:  # an activation: DQ(Q(x)) with a scalar scale
            assert producers[source].op_type == "QuantizeLinear"
            assert inits[dq.input[1]].ndim == 0
    assert quantized_ops == {"Conv", "MatMul"}, quantized_ops  # only the ops with INT8 kernels
    # skip connections stay float: no residual Add reads a DequantizeLinear
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert not any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for a in adds for i in a.input)


def test_metadata_records_the_recipe(int8_file) -> None:
    props = read_props(int8_file)
    assert props["precision"] == "int8"
    assert props["int8_method"] == "entropy"
    assert props["int8_calibration"].startswith("T91")
    assert float(props["int8_budget_db"]) == FAST.budget_db
    assert float(props["int8_heldout_drop_db"]) + float(props["int8_heldout_drop_se_db"]) <= FAST.budget_db
    assert "int8_float_nodes" in props
    assert props["scale"] == "4"  # the export's own metadata is kept
    model = onnx.load(str(int8_file))
    names = {n.name for n in model.graph.node}
    assert all(n in names for n in props["int8_float_nodes"].split(",") if n)


@pytest.mark.slow  # two more calibrations
def test_same_seed_gives_identical_bytes(exported_onnx, tmp_path) -> None:
    config = QuantizeConfig(patches=3, patch_size=16, heldout_size=16, budget_db=5.0, seed=7)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    write_int8(exported_onnx, a, config, calib_dir=BUNDLED_SAMPLES, cache_dir=tmp_path / "cache-a")
    write_int8(exported_onnx, b, config, calib_dir=BUNDLED_SAMPLES, cache_dir=tmp_path / "cache-b")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.slow  # a full sensitivity search
def test_impossible_budget_reports_the_best_reached(exported_onnx, tmp_path) -> None:
    config = QuantizeConfig(patches=3, patch_size=16, heldout_size=32, budget_db=0.0, max_float_nodes=0)
    with pytest.raises(BudgetNotMet) as info:
        write_int8(exported_onnx, tmp_path / "x.onnx", config, calib_dir=BUNDLED_SAMPLES, cache_dir=tmp_path / "c")
    message = str(info.value)
    assert "\n" not in message and "best drop" in message and "0 float nodes" in message
    assert info.value.result.score.upper_db > 0.0
    assert not (tmp_path / "x.onnx").exists()
    report = write_int8(
        exported_onnx, tmp_path / "x.onnx", config, calib_dir=BUNDLED_SAMPLES, cache_dir=tmp_path / "c", allow_over_budget=True
    )
    assert not report.met and (tmp_path / "x.onnx").is_file()


def test_default_recipe_holds_the_hard_edge_floor_on_heldout_t91(model_source, shared_data) -> None:
    """The file the runtimes build for `int8` (the diff command's tests share it)."""
    from elan_deploy.calibration.data import calibration_images, heldout_samples
    from elan_deploy.calibration.int8 import default_config
    from elan_deploy.calibration.sensitivity import HardEdgeEvaluator

    floor = default_config().hard_edge_floor_db
    assert floor == 30.0
    path = int8_onnx_for(model_source)
    props = read_props(path)
    assert float(props["int8_hard_edge_floor_db"]) == floor and float(props["int8_hard_edge_worst_db"]) >= floor
    assert float(props["int8_heldout_drop_db"]) + float(props["int8_heldout_drop_se_db"]) <= float(props["int8_budget_db"])
    check = HardEdgeEvaluator(Path(model_source.onnx_path()), heldout_samples(calibration_images(), 4, default_config().heldout_size))
    assert check.worst_db(path) >= floor  # measured again on the file, not read from it


def test_hard_edge_floor_is_skipped_for_the_unguarded_paper_model(bundled, tmp_path) -> None:
    """The paper model explodes on hard edges in FP32 itself: no FP32 picture for INT8 to hold."""
    from dataclasses import replace

    from elan_deploy.export import ExportConfig, export_onnx

    unguarded = tmp_path / "paper.fp32.onnx"
    export_onnx(bundled, unguarded, ExportConfig(), guard=None)
    assert read_props(unguarded)["range_guard"] == "none"
    report = write_int8(
        unguarded, tmp_path / "paper.int8.onnx", replace(FAST, hard_edge_floor_db=30.0), calib_dir=BUNDLED_SAMPLES,
        cache_dir=tmp_path / "cache",
    )
    assert report.hard_edge_db is None and report.hard_edge_met is None and not report.float_nodes
    assert "int8_hard_edge_floor_db" not in read_props(tmp_path / "paper.int8.onnx")


@pytest.mark.slow  # one more calibration and a hard-edge search over every layer group
def test_hard_edge_floor_floats_groups_until_saturated_crops_hold_it(exported_onnx, tmp_path) -> None:
    from elan_deploy.calibration.data import calibration_images, hard_edge_crops, heldout_samples
    from elan_deploy.calibration.sensitivity import HardEdgeEvaluator

    floor = 30.0
    config = QuantizeConfig(patches=3, patch_size=16, heldout_size=32, budget_db=4.0, hard_edge_floor_db=floor)
    out = tmp_path / "floor.onnx"
    report = write_int8(exported_onnx, out, config, calib_dir=BUNDLED_SAMPLES, cache_dir=tmp_path / "cache")
    samples = heldout_samples(calibration_images(BUNDLED_SAMPLES), 4, 32)
    check = HardEdgeEvaluator(exported_onnx, samples)
    assert len(check.crops) == len(hard_edge_crops(samples)) > 0
    # measured again on the written file, not taken from the report
    assert check.worst_db(out) >= floor
    assert report.hard_edge_met and report.hard_edge_db is not None and report.hard_edge_db >= floor
    # the loose budget alone keeps everything in INT8, which does not hold the floor
    assert report.hard_edge_groups and set(report.hard_edge_groups) <= set(report.float_groups)
    everything = write_int8(
        exported_onnx, tmp_path / "all.onnx", QuantizeConfig(**{**config.__dict__, "hard_edge_floor_db": None}),
        calib_dir=BUNDLED_SAMPLES, cache_dir=tmp_path / "cache",
    )
    assert not everything.float_nodes and check.worst_db(tmp_path / "all.onnx") < floor
    props = read_props(out)
    assert float(props["int8_hard_edge_floor_db"]) == floor and float(props["int8_hard_edge_worst_db"]) >= floor
    assert "int8_hard_edge_floor_db" not in read_props(tmp_path / "all.onnx")


def test_int8_runs_on_onnxruntime_close_to_fp32(int8_file, exported_onnx, shared_data) -> None:
    import onnxruntime as ort

    from elan_deploy.metrics import psnr

    crop = natural_crop(shared_data, 48, 64)  # natural image: ELAN's attention blows noise up
    x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None])
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]  # noqa: E731
    fp32, int8 = run(exported_onnx), run(int8_file)
    assert int8.shape == fp32.shape == (1, 3, 192, 256)
    assert psnr(np.clip(int8, 0, 255), np.clip(fp32, 0, 255)) > 35.0


def test_int8_onnx_for_reports_its_phases_while_it_calibrates_and_none_once_cached(model_source) -> None:
    """An engine build passes these on to the command's build step (`EngineLoader.start_first_use`)."""
    from dataclasses import replace

    config, heard, again = replace(FAST, seed=11), [], []
    path = int8_onnx_for(model_source, config, BUNDLED_SAMPLES, progress=heard.append)
    assert heard[:2] == ["calibration patches", f"calibrate ({config.method})"]
    assert int8_onnx_for(model_source, config, BUNDLED_SAMPLES, progress=again.append) == path and again == []


def test_int8_onnx_for_is_cached_next_to_the_export(model_source, monkeypatch) -> None:
    path = int8_onnx_for(model_source, FAST, calib_dir=BUNDLED_SAMPLES)
    assert path.parent == Path(model_source.onnx_path()).parent and path.name.endswith(".qdq.onnx")
    stamp = path.stat().st_mtime_ns
    assert int8_onnx_for(model_source, FAST, calib_dir=BUNDLED_SAMPLES) == path
    assert path.stat().st_mtime_ns == stamp
