"""The plain folder driver: bad files fail alone, every good output is written, reruns resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from elan_deploy.cli import main
from elan_deploy.imaging import read_image
from tests.helpers import make_mixed_folder, snapshot


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("mixed") / "in"
    good = make_mixed_folder(folder, shared_data, corrupt=2)
    return folder, good


def test_folder_with_bad_files_writes_every_good_output_and_resumes(mixed, tmp_path: Path, exported_onnx, capsys) -> None:
    folder, good = mixed
    inputs_before = snapshot(folder)
    out = tmp_path / "out"
    args = ["upscale", str(folder), "-o", str(out), "--onnx", str(exported_onnx)]
    assert main(args) == 1
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and any("broken_truncated.png" in f for f in failed) and any("broken_text.jpg" in f for f in failed)
    assert f"{len(good) + 2} image(s): {len(good)} done, 0 skipped" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.png" for p in good)
    for path in good:
        lr = read_image(path)
        assert read_image(out / f"{path.stem}.png").shape == (4 * lr.shape[0], 4 * lr.shape[1], 3)
    assert snapshot(folder) == inputs_before

    written = snapshot(out)
    assert main(args) == 1  # the corrupt files still fail; nothing else is touched
    assert f"0 done, {len(good)} skipped" in capsys.readouterr().err
    assert snapshot(out) == written

    (out / "img05.png").unlink()
    assert main(args) == 1
    assert f"1 done, {len(good) - 1} skipped" in capsys.readouterr().err
    again = snapshot(out)
    assert {k for k in again if again[k][:2] != written[k][:2]} == {"img05.png"}
    assert again["img05.png"][2] == written["img05.png"][2], "the rewritten output differs from the first run's"
