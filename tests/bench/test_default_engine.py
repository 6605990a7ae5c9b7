"""`--runtime auto`: the bench's fastest engine within 0.05 dB, from the user's last run or the measured rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elan_deploy.bench.default_engine import (
    ENGINE_ENV,
    LAST_RESULTS,
    MEASURED_ORDER,
    choose_engine,
    fastest_in_budget,
    last_results,
    resolve,
)
from elan_deploy.cpu import CpuCaps, parse_flags
from elan_deploy.errors import ElanDeployError
from elan_deploy.results import ResultRow, ResultsDoc, results_document

ZEN4 = CpuCaps(parse_flags("avx2 fma avx512f avx512_vnni avx512_bf16"))
AVX2 = CpuCaps(parse_flags("avx2 fma"))
AMX = CpuCaps(parse_flags("avx2 avx512f avx512_bf16 amx_bf16 amx_int8"))


def installed(*missing: str):
    return lambda runtime: f"{runtime} is not installed" if runtime in missing else None


@pytest.mark.parametrize("caps,kind", [(ZEN4, "AVX-512 BF16"), (AMX, "AVX-512 BF16"), (AVX2, "AVX2")])
def test_rule_picks_the_first_installed_cell_measured_for_the_cpu(caps: CpuCaps, kind: str) -> None:
    fastest = MEASURED_ORDER[kind][0]
    choice = choose_engine(caps, installed())
    assert (choice.runtime, choice.precision) == fastest and kind in choice.reason
    without_openvino = choose_engine(caps, installed("openvino"))
    assert (without_openvino.runtime, without_openvino.precision) == ("onnxruntime", "fp32")
    assert choice.line().startswith("--runtime auto: ") and "\n" not in choice.line()


def test_an_explicit_precision_is_kept() -> None:
    bf16 = choose_engine(ZEN4, installed(), precision="bf16")
    assert (bf16.runtime, bf16.precision) == ("openvino", "bf16")
    fp16 = choose_engine(AVX2, installed("openvino"), precision="fp16")
    assert (fp16.runtime, fp16.precision) == ("onnxruntime", "fp16")


def _row(runtime: str, precision: str, kind: str, **values) -> ResultRow:
    dataset = values.pop("dataset", "-")
    if runtime != "torch":  # engine rows name their export form, as the bench writes them
        values.update(shift="depthwise", attention="shared", windows="gather")
    return ResultRow(model="elan-light-x4", runtime=runtime, precision=precision, dataset=dataset, images=5 if kind == "quality" else 0,
                     psnr=values.pop("psnr", None), extra={"kind": kind, **values})


def bench_doc(**machine) -> ResultsDoc:
    rows = [_row("torch", "fp32", "quality", dataset="Set5", psnr=32.43), _row("torch", "fp32", "quality", dataset="Set14", psnr=28.79)]
    for runtime, precision, set5, set14, p50 in (("onnxruntime", "fp32", 32.43, 28.79, 100.0), ("openvino", "int8", 32.37, 28.70, 50.0),
                                                ("ncnn", "fp32", 32.42, 28.79, 80.0)):
        rows += [_row(runtime, precision, "quality", dataset="Set5", psnr=set5), _row(runtime, precision, "quality", dataset="Set14", psnr=set14),
                 _row(runtime, precision, "latency", shape="1x3x180x320", p50_ms=p50)]
    doc = results_document(rows)
    doc["machine"].update(machine)
    return ResultsDoc.from_json(doc)


def test_the_last_bench_picks_its_fastest_cell_within_budget_on_every_dataset() -> None:
    doc = bench_doc()
    # openvino int8 is fastest but 0.09 dB down on Set14: out of budget
    assert fastest_in_budget(doc) == [("ncnn", "fp32"), ("onnxruntime", "fp32")]
    choice = choose_engine(AVX2, installed(), doc)
    assert (choice.runtime, choice.precision) == ("ncnn", "fp32") and "your last bench" in choice.reason
    assert choose_engine(AVX2, installed("ncnn"), doc).runtime == "onnxruntime"


def test_a_bench_from_another_machine_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / LAST_RESULTS
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(bench_doc().to_json()))
    assert last_results(tmp_path) is not None
    path.write_text(json.dumps(bench_doc(cpu="another CPU").to_json()))
    assert last_results(tmp_path) is None
    path.write_text("{not json")
    assert last_results(tmp_path) is None


def test_the_environment_names_a_site_engine(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENGINE_ENV, "openvino:FP32")
    chosen = resolve(tmp_path, None, AVX2, installed())
    assert (chosen.runtime, chosen.precision) == ("openvino", "fp32") and ENGINE_ENV in chosen.reason
    assert resolve(tmp_path, "int8", AVX2, installed()).precision == "int8"
    monkeypatch.setenv(ENGINE_ENV, "openvino")
    with pytest.raises(ElanDeployError, match="RUNTIME:PRECISION"):
        resolve(tmp_path, None, AVX2, installed())


def test_every_bench_leaves_its_results_for_the_pick(tiny_bench: Path) -> None:
    import os

    copy = Path(os.environ["ELAN_DEPLOY_CACHE"]) / LAST_RESULTS
    assert json.loads(copy.read_text()) == json.loads((tiny_bench / "results.json").read_text())


def test_upscale_without_runtime_says_what_it_picked(shared_data: Path, exported_onnx: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """With the user's last bench in the cache, `upscale` runs its pick and says so in one line."""
    from elan_deploy.cli import main

    monkeypatch.delenv(ENGINE_ENV)
    cache = tmp_path / "cache"
    (cache / LAST_RESULTS).parent.mkdir(parents=True)
    full = bench_doc().to_json()
    doc = {**full, "rows": [r for r in full["rows"] if r["runtime"] in ("torch", "onnxruntime")]}
    (cache / LAST_RESULTS).write_text(json.dumps(doc))
    out = tmp_path / "out.png"
    assert main(["upscale", str(shared_data / "Set5" / "LR_bicubic" / "X4" / "birdx4.png"), "-o", str(out),
                 "--onnx", str(exported_onnx), "--cache-dir", str(cache)]) == 0
    err = capsys.readouterr().err
    assert "--runtime auto: onnxruntime fp32 (the fastest within 0.05 dB in your last bench on this machine)" in err
    assert out.is_file()
