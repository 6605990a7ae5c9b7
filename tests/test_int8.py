"""INT8 Q/DQ ONNX: TensorRT's explicit-quantization rules, determinism, budget, runs on ORT.

Fast settings throughout (few small patches, the bundled T91 subset, a loose budget); the
real recipe's figures come from `bench/int8_search.py`, never from these tests.
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
from tests.conftest import natural_crop
from tests.conftest import message_lines

FAST = QuantizeConfig(patches=6, patch_size=32, heldout_size=32, budget_db=2.0)


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


def test_layer_groups_cover_every_quantizable_node(exported_onnx) -> None:
    from elan_deploy.calibration.layers import KINDS, layer_groups, quantizable_nodes

    model = onnx.load(str(exported_onnx), load_external_data=False)
    groups = layer_groups(model)
    nodes = [n for g in groups for n in g.nodes]
    assert sorted(nodes) == sorted(quantizable_nodes(model)) and len(set(nodes)) == len(nodes)
    assert {g.kind for g in groups} == set(KINDS)  # every node recognised, no per-node fallback
    assert len(groups) == 2 + 12 * 5  # head, tail, 12 ELABs x (lfe, project_inp, attn_qk, attn_av, project_out)


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


def test_float_nodes_really_run_float(exported_onnx, tmp_path) -> None:
    """An excluded node reads no DequantizeLinear output (input, weight or bias), even where
    ORT's quantizer shares a quantized tensor or weight with a quantized node."""
    from elan_deploy.calibration.data import PatchSpec, load_patches
    from elan_deploy.calibration.recipes import calibrate, quantize

    config = QuantizeConfig(patches=3, patch_size=16)
    patches, _ = load_patches(PatchSpec(patches=3, patch_size=16), BUNDLED_SAMPLES, tmp_path)
    ranges = calibrate(exported_onnx, patches, config, tmp_path / "ranges.json")
    excluded = graph_names(exported_onnx, ["/head/Conv", "/tail/Conv", "/body.0/lfes.0/conv0/Conv", "/body.3/gmsas.0/MatMul_1"])
    model = quantize(exported_onnx, ranges, config, excluded)
    producers = {o: n for n in model.graph.node for o in n.output}
    reads_dq = lambda node: [i for i in node.input if i in producers and producers[i].op_type == "DequantizeLinear"]  # noqa: E731
    for node in model.graph.node:
        if node.name in excluded:
            assert not reads_dq(node), (node.name, reads_dq(node))
        elif node.op_type in ("Conv", "MatMul"):
            assert reads_dq(node), node.name


def test_same_seed_gives_identical_bytes(exported_onnx, tmp_path) -> None:
    config = QuantizeConfig(patches=3, patch_size=16, heldout_size=16, budget_db=5.0, seed=7)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    write_int8(exported_onnx, a, config, calib_dir=BUNDLED_SAMPLES, cache_dir=tmp_path / "cache-a")
    write_int8(exported_onnx, b, config, calib_dir=BUNDLED_SAMPLES, cache_dir=tmp_path / "cache-b")
    assert a.read_bytes() == b.read_bytes()


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


def test_int8_runs_on_onnxruntime_close_to_fp32(int8_file, exported_onnx, shared_data) -> None:
    import onnxruntime as ort

    from elan_deploy.metrics import psnr

    crop = natural_crop(shared_data, 48, 64)  # natural image: ELAN's attention blows noise up
    x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None])
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]  # noqa: E731
    fp32, int8 = run(exported_onnx), run(int8_file)
    assert int8.shape == fp32.shape == (1, 3, 192, 256)
    assert psnr(np.clip(int8, 0, 255), np.clip(fp32, 0, 255)) > 35.0


def test_int8_onnx_for_is_cached_next_to_the_export(model_source, monkeypatch) -> None:
    path = int8_onnx_for(model_source, FAST, calib_dir=BUNDLED_SAMPLES)
    assert path.parent == Path(model_source.onnx_path()).parent and path.name.endswith(".qdq.onnx")
    stamp = path.stat().st_mtime_ns
    assert int8_onnx_for(model_source, FAST, calib_dir=BUNDLED_SAMPLES) == path
    assert path.stat().st_mtime_ns == stamp


def _cli(monkeypatch, argv: list[str]) -> int:
    import elan_deploy.cli as cli

    if "quantize_cmd" not in cli.COMMAND_MODULES:  # until cli.COMMAND_MODULES lists it
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "quantize_cmd"))
    return cli.main(argv)


def test_quantize_cli_returns_0(exported_onnx, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "cli.int8.onnx"
    code = _cli(monkeypatch, [
        "quantize", "--onnx", str(exported_onnx), "--patches", "4", "--patch-size", "32", "--budget-db", "2.0",
        "--calib-dir", str(BUNDLED_SAMPLES), "--output", str(out), "--json", str(tmp_path / "r.json"),
    ])
    assert code == 0
    assert out.is_file() and (tmp_path / "r.json").is_file()
    assert "float nodes" in capsys.readouterr().out


def test_test_set_as_calibration_is_refused_by_the_cli(exported_onnx, shared_data, tmp_path, capsys, monkeypatch) -> None:
    code = _cli(monkeypatch, [
        "quantize", "--onnx", str(exported_onnx), "--calib-dir", str(shared_data / "Set5" / "HR"), "--output", str(tmp_path / "x.onnx"),
    ])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(message_lines(err)) == 1 and "test set" in err
    assert not (tmp_path / "x.onnx").exists()


def test_nncf_int8_keeps_skips_and_float_nodes_float(exported_onnx, shared_data, tmp_path) -> None:
    pytest.importorskip("nncf")
    import openvino as ov

    from elan_deploy.calibration.nncf_int8 import NNCFConfig, quantize_ov, write_ir
    from elan_deploy.metrics import psnr

    config = NNCFConfig(patches=4, patch_size=16)
    floated = graph_names(exported_onnx, ["/head/Conv", "/tail/Conv"])
    model, ignored, _ = quantize_ov(exported_onnx, 4, floated, config, BUNDLED_SAMPLES)
    assert all(f"{name}/WithoutBiases" in ignored for name in floated), ignored
    fq = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert fq
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Add" or op.get_friendly_name() in ignored:
            kinds = {op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())}
            assert "FakeQuantize" not in kinds, op.get_friendly_name()
    xml = write_ir(model, tmp_path / "nncf.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    crop = natural_crop(shared_data, 48, 64)
    x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None])
    core = ov.Core()
    run = lambda m: core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]  # noqa: E731
    assert psnr(np.clip(run(core.read_model(str(xml))), 0, 255), np.clip(run(ov.convert_model(str(exported_onnx))), 0, 255)) > 35.0
