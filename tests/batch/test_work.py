"""One image through `upscale`: an input that drives the model off its training domain is named in a warning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from elan_deploy.cli import main
from elan_deploy.stress import render


def test_an_exploding_output_is_named_and_the_guarded_model_stays_quiet(tmp_path: Path, capsys) -> None:
    qr = tmp_path / "qr.png"
    Image.fromarray(render("qr", 0, size=(64, 48))).save(qr)
    runs = {}
    for flags in ([], ["--no-guard"]):
        out = tmp_path / f"out{len(flags)}"
        assert main(["upscale", str(qr), "-o", str(out), "--runtime", "torch", "--precision", "fp32", *flags]) == 0
        runs[bool(flags)] = capsys.readouterr().err
        assert np.asarray(Image.open(out / "qr.png")).shape == (192, 256, 3)
    assert "off its training domain" not in runs[False]
    warning = [line for line in runs[True].splitlines() if "off its training domain" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: qr.png: the model's raw output reached -")
