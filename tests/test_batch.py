"""The per-input contract, output recognition, and the plain folder path (issue 12 item 7, issue 16 item 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elan_deploy.batch.outputs import JobSettings, OutputState, OutputTag, output_state, write_output
from elan_deploy.batch.plan import distinct_names
from elan_deploy.batch.results import BatchSummary, FileResult, Status, run_guarded
from elan_deploy.cli import main
from elan_deploy.errors import ImageError, NonFiniteOutput, WorkFailed
from elan_deploy.imaging import read_image
from tests.batch_inputs import make_mixed_folder, snapshot

SETTINGS = JobSettings("model-fingerprint", 4, "onnxruntime", "fp32", "1x3x16x16:1x3x192x320:4x3x512x512", 256, 64)


def test_input_errors_fail_the_input_and_bugs_stop_the_run() -> None:
    def corrupt():
        raise ImageError("cannot read image 'x.png': file is truncated")

    def nan():
        raise NonFiniteOutput("image has 3 NaN/Inf value(s)")

    def oom():
        raise MemoryError()

    assert run_guarded("x.png", "o.png", corrupt) == FileResult("x.png", "o.png", Status.FAILED, "cannot read image 'x.png': file is truncated")
    assert run_guarded("x.png", "o.png", nan).status is Status.FAILED
    assert "smaller --tile" in run_guarded("x.png", "o.png", oom).reason
    assert run_guarded("x.png", "o.png", lambda: ("alpha dropped",)).notes == ("alpha dropped",)
    with pytest.raises(ZeroDivisionError):  # a bug is not a bad file
        run_guarded("x.png", "o.png", lambda: 1 / 0)


def test_summary_names_each_failure_and_exits_one() -> None:
    summary = BatchSummary([
        FileResult("a.png", "o/a.png", Status.DONE),
        FileResult("b.png", "o/b.png", Status.SKIPPED),
        FileResult("c.png", "o/c.png", Status.FAILED, "corrupt"),
    ])
    lines: list[str] = []
    with pytest.raises(WorkFailed) as failed:
        summary.finish(lines.append, "o")
    assert failed.value.exit_code == 1 and "c.png" in str(failed.value)
    assert lines == ["failed: c.png: corrupt", "3 input(s): 1 done, 1 skipped (complete output exists), 1 failed; outputs in o"]
    assert BatchSummary([FileResult("a.png", "o/a.png", Status.DONE)]).finish(lines.append, "o") == 0
    row = FileResult("a.png", "o/a.png", Status.FAILED, "bad", ("n1", "n2"))
    assert FileResult.from_row(row.to_row()) == row


def test_distinct_names_for_shared_stems() -> None:
    names = distinct_names([Path("a.jpg"), Path("A.png"), Path("b.png")])
    assert names == {Path("a.jpg"): "a.jpg.png", Path("A.png"): "A.png.png", Path("b.png"): "b.png"}


def test_only_a_complete_output_of_this_input_and_settings_is_done(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(b"input bytes")
    from elan_deploy.batch.outputs import file_sha256

    pixels = np.full((8, 12, 3), 200, np.uint8)
    out = tmp_path / "out.png"
    assert output_state(out, source, SETTINGS.digest()) is OutputState.MISSING
    write_output(out, pixels, OutputTag(file_sha256(source), SETTINGS.digest(), 12, 8))
    assert output_state(out, source, SETTINGS.digest()) is OutputState.DONE
    other = JobSettings(**{**SETTINGS.__dict__, "precision": "int8"})
    assert output_state(out, source, other.digest()) is OutputState.OTHER
    source.write_bytes(b"another input")
    assert output_state(out, source, SETTINGS.digest()) is OutputState.OTHER
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 20])  # cut off: IEND missing
    assert output_state(out, source, SETTINGS.digest()) is OutputState.FOREIGN
    plain = tmp_path / "plain.png"
    from PIL import Image

    Image.fromarray(pixels).save(plain)  # a PNG without our record
    assert output_state(plain, source, SETTINGS.digest()) is OutputState.FOREIGN
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary was left behind"


@pytest.mark.parametrize("name", ["out.jpg", "out.jpeg", "out.webp", "out.bmp", "out.tif", "out.tiff"])
def test_every_output_format_records_what_produced_it(name: str, tmp_path: Path) -> None:
    """JPEG/WebP/TIFF carry the record in their metadata, BMP in a hidden record beside it."""
    from elan_deploy.batch.outputs import file_sha256

    source = tmp_path / "in.png"
    source.write_bytes(b"input bytes")
    out = tmp_path / name
    pixels = np.full((8, 12, 3), 120, np.uint8)
    write_output(out, pixels, OutputTag(file_sha256(source), SETTINGS.digest(), 12, 8))
    assert output_state(out, source, SETTINGS.digest()) is OutputState.DONE
    assert output_state(out) is OutputState.OTHER  # ours, whatever it was made from
    other = JobSettings(**{**SETTINGS.__dict__, "tile": None})
    assert output_state(out, source, other.digest()) is OutputState.OTHER
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 40])  # damaged after it was written
    assert output_state(out, source, SETTINGS.digest()) is OutputState.FOREIGN
    out.write_bytes(data)
    assert output_state(out, source, SETTINGS.digest()) is OutputState.DONE
    from PIL import Image

    Image.fromarray(pixels + 1).save(out)  # the user's own image under that name
    assert output_state(out, source, SETTINGS.digest()) is OutputState.FOREIGN
    assert not [p for p in tmp_path.iterdir() if ".elan-tmp-" in p.name], "a temporary was left behind"


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
