"""`elan-deploy diff` on Polygraphy: output table and exit codes, layer-by-layer first divergence,
the files `polygraphy run` loads, and the OpenVINO runner as a `polygraphy run` plugin.

Everything runs real runtimes (ONNX Runtime, OpenVINO) on natural images at small shapes; the
Polygraphy CLI runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SHAPE = "1x3x32x32"
POLYGRAPHY = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))


def _cli(argv: list[str]) -> int:
    from elan_deploy.cli import main

    return main(argv)


def _polygraphy(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([POLYGRAPHY, "run", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def diff_run(exported_onnx, tmp_path_factory):
    """One CLI diff of three engines, with every file it can write."""
    out = tmp_path_factory.mktemp("diff")
    files = {"json": out / "diff.json", "inputs": out / "inputs.json", "outputs": out / "ref.json"}
    code = _cli([
        "diff", "onnxruntime:fp32", "openvino:fp32", "onnxruntime:fp16", "--onnx", str(exported_onnx), "--shape", SHAPE,
        "--iterations", "2", "--json", str(files["json"]), "--save-inputs", str(files["inputs"]), "--save-outputs", str(files["outputs"]),
    ])
    return code, files


# --- bad usage ---------------------------------------------------------------------------------------


def test_bad_usage_exits_2_before_any_work(exported_onnx, tmp_path, capsys):
    base = ["diff", "onnxruntime:fp32", "openvino:fp32", "--onnx", str(exported_onnx)]
    same = tmp_path / "same.json"
    cases = [
        (["diff", "onnxruntime:fp32"], "at least two"),
        ([*base, "--shape", "1x3x30x32"], "multiples of 16"),
        ([*base, "--json", str(same), "--save-outputs", str(same)], "same file"),
        ([*base, "--save-inputs", str(exported_onnx)], "input model"),
        ([*base, "--json", str(tmp_path / "missing" / "x.json")], "does not exist"),
        (["diff", "torch:fp32", "onnxruntime:fp32", "--layers"], "put an onnxruntime or openvino engine first"),
        ([*base, "--images", str(tmp_path / "nowhere")], "not a folder"),
    ]
    for argv, words in cases:
        assert _cli(argv) == 2, argv
        assert words in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing was written


# --- the output table -----------------------------------------------------------------------------


def test_diff_passes_and_writes_the_results(diff_run, exported_onnx):
    code, files = diff_run
    assert code == 0
    doc = json.loads(files["json"].read_text())
    assert doc["schema"] == "elan-deploy/diff/1" and doc["reference"] == "onnxruntime:fp32" and doc["shape"] == SHAPE
    assert doc["passed"] is True and doc["failed"] == [] and doc["onnx"] == str(exported_onnx)
    assert len(doc["images"]) == 2 and all(Path(p).is_file() for p in doc["images"])
    engines = {e["engine"]: e for e in doc["engines"]}
    assert list(engines) == ["onnxruntime:fp32", "openvino:fp32", "onnxruntime:fp16"]
    assert engines["onnxruntime:fp32"]["reference"] and engines["onnxruntime:fp32"]["psnr_db"] == "inf"
    for name in ("openvino:fp32", "onnxruntime:fp16"):
        e = engines[name]
        assert e["passed"] and e["nonfinite"] == 0 and e["psnr_db"] >= 40.0
        assert 0 < e["mean_abs_error"] <= e["max_abs_error"] < 255
    # fp32 on two runtimes agrees to float32 rounding; typed fp16 does not
    assert engines["openvino:fp32"]["psnr_db"] > engines["onnxruntime:fp16"]["psnr_db"] + 20
    assert engines["openvino:fp32"]["precision_used"] == "fp32"


def test_engines_below_the_psnr_threshold_are_named_and_exit_1(diff_run, exported_onnx, tmp_path, capsys):
    _, files = diff_run
    measured = {e["engine"]: e["psnr_db"] for e in json.loads(files["json"].read_text())["engines"][1:]}
    threshold = 99.0
    below = sorted(name for name, value in measured.items() if value < threshold)
    assert below  # typed fp16 sits far below 99 dB on any CPU
    out = tmp_path / "strict.json"
    code = _cli([
        "diff", "onnxruntime:fp32", "openvino:fp32", "onnxruntime:fp16", "--onnx", str(exported_onnx), "--shape", SHAPE,
        "--iterations", "2", "--psnr-threshold", str(threshold), "--json", str(out),
    ])
    err = capsys.readouterr().err
    assert code == 1
    doc = json.loads(out.read_text())
    assert doc["passed"] is False and sorted(doc["failed"]) == below
    for name in below:
        assert f"FAILED {name}" in err
    for name in set(measured) - set(below):
        assert f"FAILED {name}" not in err


def test_atol_rtol_is_polygraphys_elementwise_check(diff_run, exported_onnx, tmp_path):
    _, files = diff_run
    engines = json.loads(files["json"].read_text())["engines"]
    fp32_max = next(e["max_abs_error"] for e in engines if e["engine"] == "openvino:fp32")
    out = tmp_path / "tol.json"
    argv = ["diff", "onnxruntime:fp32", "openvino:fp32", "--onnx", str(exported_onnx), "--shape", SHAPE, "--iterations", "2", "--json", str(out)]
    assert _cli([*argv, "--atol", str(fp32_max * 2), "--rtol", "0"]) == 0
    assert _cli([*argv, "--atol", str(fp32_max / 4), "--rtol", "0"]) == 1
    assert "values beyond atol" in json.loads(out.read_text())["engines"][1]["reasons"][0]


# --- the files polygraphy run loads ------------------------------------------------------------------


def test_polygraphy_run_loads_the_saved_inputs_and_reference_outputs(diff_run, exported_onnx, tmp_path):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    _, files = diff_run
    feeds = load_json(str(files["inputs"]))
    assert len(feeds) == 2 and feeds[0]["lr"].shape == (1, 3, 32, 32) and feeds[0]["lr"].dtype == np.float32
    args = [str(exported_onnx), "--onnxrt", "--load-inputs", str(files["inputs"])]
    tolerance = ["--rtol", "1e-5", "--atol", "1e-4"]  # relative to values up to 255; near-zero outputs get atol
    run = _polygraphy([*args, "--load-outputs", str(files["outputs"]), *tolerance])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "PASSED" in run.stdout and "onnxruntime:fp32" in run.stdout

    saved = RunResults.load(str(files["outputs"]))
    assert list(saved.keys()) == ["onnxruntime:fp32"]  # the reference only
    outputs = saved[0][1][1]["sr"].copy()
    outputs[0, 1, 20, 30] += 1.0  # one value off by one grey level
    saved[0][1][1]["sr"] = outputs
    perturbed = tmp_path / "perturbed.json"
    saved.save(str(perturbed))
    run = _polygraphy([*args, "--load-outputs", str(perturbed), *tolerance])
    assert run.returncode != 0
    assert "FAILED" in run.stdout + run.stderr


def test_polygraphy_run_compares_onnxruntime_with_the_openvino_plugin(diff_run, exported_onnx):
    from importlib import metadata

    plugins = {e.name: e.value for e in metadata.entry_points().select(group="polygraphy.run.plugins")}
    assert plugins.get("openvino") == "elan_deploy.diff.polygraphy_plugin:export_argument_groups"
    _, files = diff_run
    run = _polygraphy([
        str(exported_onnx), "--onnxrt", "--openvino", "--load-inputs", str(files["inputs"]), "--rtol", "1e-4", "--atol", "1e-3",
    ])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "openvino-runner" in run.stdout and "onnxrt-runner" in run.stdout
    assert "Passed: 2/2 iterations" in run.stdout


# --- layer by layer ---------------------------------------------------------------------------------


@pytest.mark.slow  # marks every tensor of two engines
def test_layers_cli_writes_every_tensor_and_the_plot(exported_onnx, tmp_path, capsys):
    out = tmp_path / "layers.json"
    # a batch of two: the layers run on its first image, through an OpenVINO IR built for two
    code = _cli([
        "diff", "onnxruntime:fp32", "openvino:fp32", "--onnx", str(exported_onnx), "--shape", "2x3x32x32", "--iterations", "1",
        "--layers", "--json", str(out),
    ])
    printed = capsys.readouterr()
    assert code == 0
    doc = json.loads(out.read_text())
    layers = doc["layers"]
    assert len(layers) > 500 and {row["engine"] for row in layers} == {"openvino:fp32"}
    depths = [row["depth"] for row in layers]
    assert depths == sorted(depths)  # graph order
    assert {"Conv", "MatMul", "Softmax"} <= {row["op"] for row in layers}
    assert doc["first_divergence"] is None and doc["engines"][1]["first_divergence"] is None
    assert doc["engines"][1]["layers_compared"] == len(layers) and "layers_compared" not in doc["engines"][0]
    assert all(row["passed"] for row in layers)
    assert "layer by layer" in printed.out and "no tensor below 40 dB" in printed.err
    plot = out.with_suffix(".layers.png")
    pytest.importorskip("matplotlib")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from elan_deploy.provenance import written_by_elan_deploy

    assert written_by_elan_deploy(plot) and written_by_elan_deploy(out)  # so a rerun of this command replaces both


@pytest.mark.slow
def test_int8_layers_name_where_quantization_error_enters(exported_onnx, tmp_path, capsys):
    """The acceptance run: fp32 against the INT8 Q/DQ engine, every tensor, first divergence named."""
    out = tmp_path / "int8.json"
    code = _cli([
        "diff", "onnxruntime:fp32", "onnxruntime:int8", "--onnx", str(exported_onnx), "--shape", "1x3x48x64", "--iterations", "2",
        "--layers", "--json", str(out),
    ])
    assert code == 0
    doc = json.loads(out.read_text())
    assert len(doc["layers"]) > 500
    first = doc["first_divergence"]
    assert first is not None and f"first divergence at '{first}'" in capsys.readouterr().err
    rows = {row["tensor"]: row for row in doc["layers"]}
    assert not rows[first]["passed"]
    # before the first divergence every tensor passes; the first quantized layers are where it starts to lose
    assert all(r["passed"] for r in doc["layers"] if r["depth"] < rows[first]["depth"])
    assert any(r["psnr_db"] != "inf" for r in doc["layers"] if r["depth"] <= rows[first]["depth"])


# --- never replacing a file the tool did not write -------------------------------------------------


@pytest.mark.parametrize("flag", ["--json", "--save-inputs", "--save-outputs", "--layers plot"])
def test_existing_files_it_did_not_write_are_refused_before_any_engine_is_built(flag, exported_onnx, tmp_path, capsys):
    from tests.helpers import message_lines

    notes = tmp_path / ("notes.layers.png" if flag == "--layers plot" else "notes.txt")
    notes.write_text("my notes")
    target = ["--json", str(tmp_path / "notes.json"), "--layers"] if flag == "--layers plot" else [flag, str(notes)]
    cache = tmp_path / "cache"
    argv = ["diff", "onnxruntime:fp32", "openvino:fp32", "--onnx", str(exported_onnx), "--shape", SHAPE, "--iterations", "1",
            "--cache-dir", str(cache), *target]
    assert _cli(argv) == 2
    err = message_lines(capsys.readouterr().err)
    assert len(err) == 1 and f"'{notes}' exists and elan-deploy did not write it" in err[0] and "--overwrite" in err[0]
    assert notes.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [notes.name], "something was built or written before the refusal"


def test_a_rerun_replaces_its_own_files_and_overwrite_replaces_any(exported_onnx, tmp_path, capsys):
    from polygraphy.json import load_json

    files = {flag: tmp_path / name for flag, name in (("--json", "diff.json"), ("--save-inputs", "in.json"), ("--save-outputs", "ref.json"))}
    argv = ["diff", "onnxruntime:fp32", "openvino:fp32", "--onnx", str(exported_onnx), "--shape", SHAPE, "--iterations", "1"]
    argv += [part for flag, path in files.items() for part in (flag, str(path))]
    assert _cli(argv) == 0
    assert _cli(argv) == 0, capsys.readouterr().err  # the same command again: its own files are replaced
    for flag, path in files.items():
        # Polygraphy's files are the tool's only while they hold what it wrote; a results document
        # is known by its schema, so it stops being the tool's when it holds something else
        path.write_text("my notes" if flag == "--json" else path.read_text() + " ")
        assert _cli(argv) == 2
        assert "did not write" in capsys.readouterr().err
    assert _cli([*argv, "--overwrite"]) == 0
    assert json.loads(files["--json"].read_text())["schema"] == "elan-deploy/diff/1"
    assert load_json(str(files["--save-inputs"]))[0]["lr"].shape == (1, 3, 32, 32)
