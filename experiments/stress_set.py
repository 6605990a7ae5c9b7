"""Every engine, guarded and unguarded, on the stress set (text, UI, QR, pixel art, line art, colour).

    python -m experiments.stress_set [--cells torch:fp32,onnxruntime:fp16,...] [--per-class 2] [--out stress-out]

For each cell and each model (the range-guarded one, and the paper model with `--no-guard`):
- on the raw LR inputs: the raw output range, the share of output pixels within 12 levels of the
  colour in regions flat in the input (the lowest image of each class), and the worst fidelity
  (PSNR) to the guarded PyTorch FP32 output;
- on the HR-rendered, bicubic-downscaled inputs: mean PSNR against the HR rendering.

Writes `stress.json`, prints the table, and draws `stress.png`: one text and one QR input,
upscaled by each cell unguarded (top) and guarded (bottom). Engines are static at the stress
images' padded size; INT8 cells calibrate on T91 (minutes each).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.errors import NonFiniteOutput
from elan_deploy.metrics import psnr
from elan_deploy.model import load_bundled
from elan_deploy.results import machine_info
from elan_deploy.runtimes import EngineCache, EngineLoader, ModelSource, ShapeRange
from elan_deploy.stress import CLASSES, score_raw_outputs, stress_set
from elan_deploy.upscale import Upscaler, round_up

DEFAULT_CELLS = "torch:fp32,torch:bf16,onnxruntime:fp32,onnxruntime:fp16,onnxruntime:int8,openvino:fp32,openvino:bf16,openvino:int8"
SCALE = 4


def run_cell(source: ModelSource, runtime: str, precision: str, images, cache: EngineCache) -> tuple[str, list[np.ndarray], list[np.ndarray]]:
    """(precision used, raw outputs on the raw inputs, outputs on the downscaled-HR inputs)."""
    h, w = images[0].lr.shape[:2]
    shapes = ShapeRange.static((1, 3, round_up(h), round_up(w)))
    engine = EngineLoader(source, runtime, precision, shapes, cache_root=cache.root).open()
    upscaler = Upscaler(engine, SCALE, tile=None, shapes=shapes if runtime != "torch" else None)
    raw = [upscaler(image.lr.astype(np.float32)) for image in images]
    downscaled = [upscaler(image.hr_lr.astype(np.float32)) for image in images]
    return engine.info.precision_used, raw, downscaled


def summarize(images, raw, downscaled, reference) -> dict:
    scores = score_raw_outputs(images, raw, SCALE, reference)
    hr_psnr = [psnr(np.clip(o, 0, 255).round(), image.hr.astype(np.float64)) for image, o in zip(images, downscaled)]
    return {
        "raw_min": scores.raw_min, "raw_max": scores.raw_max, "flat_share": scores.flat_share,
        "worst_fidelity_db": scores.worst_fidelity_db, "hr_psnr_db": round(float(np.mean(hr_psnr)), 3),
    }


def picture(images, outputs: dict[tuple[str, str], list[np.ndarray]], path: Path) -> None:
    """Text and QR crops: rows = inputs x (unguarded, guarded), columns = cells."""
    from PIL import Image, ImageDraw

    picks = [i for i, image in enumerate(images) if image.name in ("text-1", "qr-1")]
    cells = sorted({cell for cell, _ in outputs}, key=list(dict.fromkeys(c for c, _ in outputs)).index)
    tile_h, tile_w = 160, 240
    canvas = Image.new("RGB", ((len(cells) + 1) * tile_w, len(picks) * 2 * (tile_h + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, index in enumerate(picks):
        for g, guard in enumerate(("unguarded", "guarded")):
            y = (2 * r + g) * (tile_h + 14)
            lr = Image.fromarray(images[index].lr).resize((images[index].lr.shape[1] * SCALE, images[index].lr.shape[0] * SCALE), Image.NEAREST)
            canvas.paste(lr.crop((0, 0, tile_w, tile_h)), (0, y + 14))
            draw.text((2, y), f"{images[index].name} input ({guard} row)", fill=(0, 0, 0))
            for c, cell in enumerate(cells):
                out = outputs.get((cell, guard))
                if out is None:
                    continue
                pixels = np.clip(out[index], 0, 255).round().astype(np.uint8)
                canvas.paste(Image.fromarray(pixels).crop((0, 0, tile_w, tile_h)), ((c + 1) * tile_w, y + 14))
                draw.text(((c + 1) * tile_w + 2, y), f"{cell} {guard}", fill=(0, 0, 0))
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=DEFAULT_CELLS, help=f"RUNTIME:PRECISION,... [{DEFAULT_CELLS}]")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("stress-out"))
    args = parser.parse_args()
    cells = [tuple(c.split(":")) for c in args.cells.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    loaded = load_bundled()
    images = stress_set(SCALE, args.per_class)
    cache = EngineCache(args.out / "engines")
    sources = {guard: ModelSource(loaded, work_dir=args.out / "onnx", guard=guard == "guarded") for guard in ("guarded", "unguarded")}
    _, reference, _ = run_cell(sources["guarded"], "torch", "fp32", images, cache)
    rows, outputs, records = [], {}, []
    for runtime, precision in cells:
        for guard, source in sources.items():
            try:
                used, raw, downscaled = run_cell(source, runtime, precision, images, cache)
            except NonFiniteOutput as error:
                # The engine refuses to turn NaN/Inf into pixels: that is this cell's result.
                records.append({"runtime": runtime, "precision": precision, "guard": guard, "non_finite": str(error)})
                rows.append((f"{runtime} {precision}", precision, guard, "NaN/Inf", *("–" for _ in CLASSES), "–", "–"))
                print(json.dumps(records[-1]), flush=True)
                continue
            outputs[(f"{runtime}:{precision}", guard)] = raw
            summary = summarize(images, raw, downscaled, reference)
            records.append({"runtime": runtime, "precision": precision, "precision_used": used, "guard": guard, **summary})
            flat = summary["flat_share"]
            rows.append((
                f"{runtime} {precision}", used, guard, f"{summary['raw_min']:.0f}..{summary['raw_max']:.0f}",
                *(f"{flat[k] * 100:.1f}" if k in flat else "–" for k in CLASSES),
                f"{summary['worst_fidelity_db']:.1f}", f"{summary['hr_psnr_db']:.2f}",
            ))
            print(json.dumps(records[-1]), flush=True)
    info = machine_info()
    machine = f"{info['cpu']} ({info.get('cpu_id') or '?'}), {info['cores']} cores, {cpu_caps().describe()}"
    print_table(
        f"stress set ({len(images)} images, x{SCALE}; {machine}): flat = % of output pixels within 12 levels in input-flat regions (worst image)",
        ("cell", "ran", "model", "raw output", *(f"flat {k}" for k in CLASSES), "worst dB vs guarded fp32", "PSNR vs HR"), rows,
    )
    (args.out / "stress.json").write_text(json.dumps({"machine": machine, "rows": records}, indent=1) + "\n")
    picture(images, outputs, args.out / "stress.png")
    print(f"wrote {args.out / 'stress.json'} and {args.out / 'stress.png'}")


if __name__ == "__main__":
    main()
