"""Why the guarded model is not at or above the paper model on every downscaled-HR stress image.

    python -m experiments.guard_parity [--per-class 5]

The range guard's acceptance asks two things of guarded PyTorch FP32 at once: on the raw stress
inputs, flat QR regions at least 95 % clean; on the HR renders downscaled by bicubic, a PSNR
against HR not below the paper model's, for every image. This measures where the second one
is lost and what widening the ranges does to the first.

1. **Where the loss comes from.** For every downscaled image the guard leaves below the paper
   model, each guard site is clamped alone, and the PSNR change against the paper model is
   recorded: how many sites move the image, by how much in each direction, and the largest.
2. **Wider ranges from T91 itself.** The ranges are measured again on T91 plus T91 posterized to
   3, 2 and 1 bits per channel (hard-edged, saturated pictures made from the training images,
   then x4 bicubic LR like T91's own), each set's per-channel union with T91's. For each:
   how much wider the upper bounds get (median over sites), raw QR and colour-block flat shares,
   the worst downscaled image's change and how many images are below the paper model.

The stress images choose nothing here: the ranges come from T91 only, as the guard's do.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from elan_deploy.calibration.data import calibration_images
from elan_deploy.calibration.ranges import measure_ranges, shipped_guard
from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.imaging import imresize, modcrop, read_image
from elan_deploy.metrics import psnr
from elan_deploy.model import load_bundled
from elan_deploy.model.range_guard import ChannelClamp, Clamped, RangeGuard, clamp_bounds, guard_reference, guard_sites, replace_module
from elan_deploy.results import machine_info
from elan_deploy.stress import score_raw_outputs, stress_set
from experiments.guard_placement import run

SCALE = 4
POSTERIZE_BITS = (3, 2, 1)


def hr_psnr(model: torch.nn.Module, image) -> float:
    return psnr(np.clip(run(model, image.hr_lr), 0, 255).round(), image.hr.astype(np.float64))


def clamped_at(model: torch.nn.Module, guard: RangeGuard, site: str) -> torch.nn.Module:
    """The paper model with only `site` clamped, as the guard clamps it."""
    import copy

    one = copy.deepcopy(model).eval()
    replace_module(one, site, Clamped(one.get_submodule(site), ChannelClamp(*clamp_bounds(guard, site))))
    return one


def bicubic_lr(hr: np.ndarray) -> np.ndarray:
    """The x`SCALE` LR the guard's ranges are measured on (MATLAB bicubic, as for T91)."""
    return imresize(modcrop(hr, SCALE), scale=1 / SCALE)


def posterize(hr: np.ndarray, bits: int) -> np.ndarray:
    step = 255.0 / (2**bits - 1)
    return np.clip(np.round(hr / step) * step, 0, 255).astype(np.uint8)


def union(a: RangeGuard, b: RangeGuard, source: str) -> RangeGuard:
    return RangeGuard({s: np.minimum(a.low[s], b.low[s]) for s in a.sites}, {s: np.maximum(a.high[s], b.high[s]) for s in a.sites}, source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=5)
    args = parser.parse_args()
    loaded = load_bundled()
    model = loaded.model.eval()
    guard = shipped_guard(loaded)
    sites = guard_sites(model)
    images = stress_set(SCALE, args.per_class)
    plain = {im.name: hr_psnr(model, im) for im in images}
    guarded = guard_reference(model, guard)
    below = [(im, hr_psnr(guarded, im) - plain[im.name]) for im in images]
    below = [(im, delta) for im, delta in below if delta < 0]
    info = machine_info()
    machine = f"{info['cpu']} ({info.get('cpu_id')}), {cpu_caps().describe()}"

    one_site = {site: clamped_at(model, guard, site) for site in sites}
    rows = []
    for im, delta in below:
        moves = {site: hr_psnr(one_site[site], im) - plain[im.name] for site in sites}
        down = [v for v in moves.values() if v < -1e-4]
        up = [v for v in moves.values() if v > 1e-4]
        worst = min(moves, key=moves.get)
        rows.append((im.name, f"{delta:+.4f}", f"{len(down)} / {len(up)} of {len(sites)}", f"{sum(down):+.4f} / {sum(up):+.4f}",
                     f"{moves[worst]:+.4f} ({worst})"))
        print(" | ".join(rows[-1]), flush=True)
    print_table(
        f"downscaled-HR stress images the guard leaves below the paper model, each site clamped alone ({len(images)} images; {machine})",
        ("image", "guard Δ dB", "sites lowering / raising it", "sum of lowering / raising dB", "largest loss at one site"), rows,
    )

    split = calibration_images()
    hrs = [read_image(p) for p in split.calibration + split.heldout]
    t91 = [bicubic_lr(hr) for hr in hrs]
    base = measure_ranges(loaded, t91, "T91")
    sets = {"T91 (the guard)": base}
    for bits in POSTERIZE_BITS:
        posterized = measure_ranges(loaded, [bicubic_lr(posterize(hr, bits)) for hr in hrs], f"T91 posterized {bits} bit")
        sets[f"T91 + T91 posterized to {bits} bit"] = union(base, posterized, f"T91 + {bits} bit")
        print(f"measured T91 posterized to {bits} bit", flush=True)
    rows = []
    for name, ranges in sets.items():
        widened = float(np.median([np.median(ranges.high[s] / np.maximum(base.high[s], 1e-6)) for s in sites]))
        model_g = guard_reference(model, ranges)
        scores = score_raw_outputs(images, [run(model_g, im.lr) for im in images], SCALE)
        deltas = [hr_psnr(model_g, im) - plain[im.name] for im in images]
        worst = int(np.argmin(deltas))
        rows.append((name, f"{widened:.3f}", f"{scores.raw_min:.0f}..{scores.raw_max:.0f}", f"{scores.flat_share['qr'] * 100:.1f}",
                     f"{scores.flat_share['colour-blocks'] * 100:.1f}", f"{deltas[worst]:+.4f} ({images[worst].name})",
                     str(sum(d < 0 for d in deltas))))
        print(" | ".join(rows[-1]), flush=True)
    print_table(
        f"guard ranges widened by posterized T91, reference FP32 ({len(images)} stress images, x{SCALE}; {machine})",
        ("ranges", "upper bounds x (median)", "raw output", "QR flat %", "colour flat %", "worst HR Δ dB", "images below"), rows,
    )


if __name__ == "__main__":
    main()
