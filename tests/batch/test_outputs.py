"""Output recognition: only a complete output of this input and these settings counts as done, in every format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elan_deploy.batch.outputs import JobSettings, OutputState, OutputTag, output_state, write_output

SETTINGS = JobSettings("model-fingerprint", 4, "onnxruntime", "fp32", "1x3x16x16:1x3x192x320:4x3x512x512", 256, 64)


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
