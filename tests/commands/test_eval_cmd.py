"""`elan-deploy eval`: paper figures and one-line errors for bad input."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from elan_deploy.cli import main
from elan_deploy.model.checkpoint import BUNDLED_WEIGHTS
from tests.helpers import message_lines

PAPER_PSNR = {"Set5": 32.43, "Set14": 28.78, "B100": 27.69}


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code != 0
    lines = message_lines(err)
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]


def evaluate_to_json(dataset: str, shared_data: Path, tmp_path: Path, capsys) -> dict:
    out = tmp_path / f"{dataset}.json"
    code, stdout, _ = run_cli(["eval", "--dataset", dataset, "--data-root", str(shared_data), "--json", str(out)], capsys)
    assert code == 0 and dataset in stdout
    return json.loads(out.read_text())


def test_set5_matches_the_paper(shared_data: Path, tmp_path: Path, capsys) -> None:
    doc = evaluate_to_json("Set5", shared_data, tmp_path, capsys)
    row = doc["rows"][0]
    assert row["images"] == 5 and row["runtime"] == "torch" and row["precision_used"] == "fp32"
    assert abs(row["psnr"] - PAPER_PSNR["Set5"]) <= 0.02
    assert 0.895 < row["ssim"] < 0.900  # paper: 0.8975
    assert doc["schema"] == "elan-deploy/results/1" and doc["machine"]["torch"] == torch.__version__


@pytest.mark.slow  # ~30 s; Set5 against the paper stays in the default suite
def test_set14_matches_the_paper(shared_data: Path, tmp_path: Path, capsys) -> None:
    row = evaluate_to_json("Set14", shared_data, tmp_path, capsys)["rows"][0]
    assert row["images"] == 14 and abs(row["psnr"] - PAPER_PSNR["Set14"]) <= 0.02


@pytest.mark.slow
def test_b100_matches_the_paper(shared_data: Path, tmp_path: Path, capsys) -> None:
    row = evaluate_to_json("B100", shared_data, tmp_path, capsys)["rows"][0]
    assert row["images"] == 100 and abs(row["psnr"] - PAPER_PSNR["B100"]) <= 0.02


@pytest.fixture
def folder_with(tmp_path: Path, shared_data: Path):
    """A dataset folder holding one good HR image plus the given bad file."""

    def make(name: str, data: bytes) -> Path:
        folder = tmp_path / "ds"
        folder.mkdir()
        shutil.copy(shared_data / "Set5" / "HR" / "bird.png", folder / "a.png")
        (folder / name).write_bytes(data)
        return folder

    return make


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("notes.png", b"this is not an image\n" * 10, "cannot read image"),
        ("empty.png", b"", "empty"),
    ],
)
def test_bad_images_fail_with_one_line(folder_with, capsys, name: str, data: bytes, needle: str) -> None:
    code, _, err = run_cli(["eval", "--dataset", str(folder_with(name, data))], capsys)
    assert_one_line_error(code, err, needle)


def test_truncated_png_fails_with_one_line(folder_with, shared_data: Path, capsys) -> None:
    png = (shared_data / "Set5" / "HR" / "head.png").read_bytes()
    code, _, err = run_cli(["eval", "--dataset", str(folder_with("z.png", png[: len(png) // 2]))], capsys)
    assert_one_line_error(code, err, "z.png")


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_code_running_checkpoint_is_refused(tmp_path: Path, shared_data: Path, capsys) -> None:
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"params": _RunsCode()}))
    code, out, err = run_cli(["eval", "--model", str(evil), "--data-root", str(shared_data)], capsys)
    assert_one_line_error(code, err, "refused to load")
    assert "pwned" not in out


def test_other_architecture_checkpoint(tmp_path: Path, shared_data: Path, capsys) -> None:
    other = tmp_path / "rrdb.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(8, 3, 3, 3)}}, other)
    args = ["eval", "--model", str(other), "--data-root", str(shared_data)]
    assert_one_line_error(*run_cli(args, capsys)[::2], "not an ELAN checkpoint")


def test_scale_mismatch(shared_data: Path, capsys) -> None:
    code, _, err = run_cli(["eval", "--model", str(BUNDLED_WEIGHTS), "--scale", "2", "--data-root", str(shared_data)], capsys)
    assert_one_line_error(code, err, "scale mismatch")


def test_missing_dataset_folder(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["eval", "--dataset", str(tmp_path / "nowhere")], capsys)
    assert_one_line_error(code, err, "does not exist")


def test_missing_data_root(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["eval", "--dataset", "Set14", "--data-root", str(tmp_path / "none")], capsys)
    assert_one_line_error(code, err, "data root")
