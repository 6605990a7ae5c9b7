"""Where the range guard clamps: raw stress inputs, downscaled-HR stress inputs and Set5/Set14 per placement.

    python -m experiments.guard_placement [--per-class 2]

Measures every convolution's per-channel output range on T91 (as `calibration.ranges` does for
the guard's own sites, about two minutes), then runs the reference PyTorch FP32 network with
clamps at several placements:

- every conv: every LFE conv and both GMSA projections (97 clamps, none of which folds away);
- guard (shipped): the LFE's first conv (upper bound; ReLU follows) in every ELAB but the last
  two, the GMSA input projection and the tail (`model.range_guard.guard_sites`), all foldable
  into the convolutions but the query half and the tail;
- with the last two ELABs' LFEs: the guard plus those four LFE clamps (every LFE clamped);
- without the query clamps, without the LFE clamps: what each part holds;
- LFE bound x1.25: the guard with every LFE upper bound raised by a quarter.

Reports the raw output range and flat shares on the raw stress inputs (`elan_deploy.stress`),
the per-image PSNR change against the HR render on the downscaled-HR inputs relative to the
paper model (its worst image), and the Set5/Set14 Y-PSNR change.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from elan_deploy.calibration.ranges import measure_calibration_set
from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.datasets import load_dataset
from elan_deploy.metrics import psnr, psnr_y
from elan_deploy.model import load_bundled
from elan_deploy.model.range_guard import ChannelClamp, Clamped, RangeGuard, guard_sites, replace_module
from elan_deploy.results import machine_info
from elan_deploy.stress import CLASSES, score_raw_outputs, stress_set

SCALE = 4


def every_conv(model: torch.nn.Module) -> list[str]:
    sites = []
    for b, block in enumerate(model.body):
        for i in range(1 + block.shared_depth):
            sites += [f"body.{b}.modules_lfe.lfe_{i}.{c}.shift_conv.conv1x1" for c in ("conv0", "conv1")]
            sites += [f"body.{b}.modules_gmsa.gmsa_{i}.{p}" for p in ("project_inp", "project_out")]
    return sites + ["tail.0"]


def query_channels(site: str, channels: int) -> np.ndarray:
    """The query half of each of the three window groups of a first GMSA's input projection."""
    mask = np.zeros(channels, dtype=bool)
    if site.endswith("gmsa_0.project_inp"):
        group = channels // 3
        for g in range(3):
            mask[g * group : g * group + group // 2] = True
    return mask


def placements(model: torch.nn.Module, ranges: RangeGuard) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Placement name -> site -> (low, high) clamped there."""
    def bounds(site: str, lfe_factor: float = 1.0, queries: bool = True) -> tuple[np.ndarray, np.ndarray]:
        low, high = ranges.low[site].copy(), ranges.high[site].copy()
        if ".conv0." in site:
            low, high = np.minimum(low, 0), high * np.float32(lfe_factor)
        if not queries:
            mask = query_channels(site, low.shape[0])
            low[mask], high[mask] = -np.inf, np.inf
        return low, high

    shipped = guard_sites(model)
    every_lfe = [s for s in every_conv(model) if s in shipped or ".conv0." in s]
    return {
        "every conv": {s: (ranges.low[s], ranges.high[s]) for s in every_conv(model)},
        "guard (shipped)": {s: bounds(s) for s in shipped},
        "with the last two ELABs' LFEs": {s: bounds(s) for s in every_lfe},
        "without the query clamps": {s: bounds(s, queries=False) for s in shipped},
        "without the LFE clamps": {s: bounds(s) for s in shipped if ".conv0." not in s},
        "LFE bound x1.25": {s: bounds(s, lfe_factor=1.25) for s in shipped},
    }


def clamped(model: torch.nn.Module, sites: dict[str, tuple[np.ndarray, np.ndarray]]) -> torch.nn.Module:
    guarded = copy.deepcopy(model).eval()
    for site, (low, high) in sites.items():
        replace_module(guarded, site, Clamped(guarded.get_submodule(site), ChannelClamp(low, high)))
    return guarded


def run(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1)[None]))
    with torch.inference_mode():
        return model(x)[0].numpy().transpose(1, 2, 0)


def hr_psnr(model: torch.nn.Module, images) -> list[float]:
    return [psnr(np.clip(run(model, im.hr_lr), 0, 255).round(), im.hr.astype(np.float64)) for im in images]


def set_psnr(model: torch.nn.Module, name: str) -> float:
    return float(np.mean([psnr_y(np.clip(run(model, s.lr), 0, 255).round(), s.hr, SCALE) for s in load_dataset(name, SCALE)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=2)
    args = parser.parse_args()
    loaded = load_bundled()
    model = loaded.model.eval()
    ranges = measure_calibration_set(loaded, every_conv(model), progress=lambda d, t: print(f"T91 ranges {d}/{t}", end="\r", flush=True))
    images = stress_set(SCALE, args.per_class)
    plain_hr = hr_psnr(model, images)
    plain_sets = {n: set_psnr(model, n) for n in ("Set5", "Set14")}
    rows = []
    for name, sites in placements(model, ranges).items():
        guarded = clamped(model, sites)
        raw = [run(guarded, im.lr) for im in images]
        scores = score_raw_outputs(images, raw, SCALE)
        gains = [g - p for g, p in zip(hr_psnr(guarded, images), plain_hr)]
        worst = int(np.argmin(gains))
        flat = scores.flat_share
        rows.append((
            name, str(len(sites)), f"{scores.raw_min:.0f}..{scores.raw_max:.0f}",
            *(f"{flat[k] * 100:.1f}" if k in flat else "–" for k in CLASSES),
            f"{gains[worst]:+.3f} ({images[worst].name})",
            *(f"{set_psnr(guarded, n) - plain_sets[n]:+.4f}" for n in ("Set5", "Set14")),
        ))
        print(" | ".join(rows[-1]), flush=True)
    info = machine_info()
    print_table(
        f"range guard placements, reference FP32 ({len(images)} stress images, x{SCALE}; {info['cpu']} ({info.get('cpu_id')}), {cpu_caps().describe()})",
        ("placement", "clamps", "raw output", *(f"flat {k}" for k in CLASSES), "worst HR Δ dB", "Set5 Δ", "Set14 Δ"), rows,
    )


if __name__ == "__main__":
    main()
