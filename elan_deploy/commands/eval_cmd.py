"""`elan-deploy eval`: paper-protocol quality of one runtime on benchmark datasets."""

from __future__ import annotations

import argparse

from pathlib import Path

from elan_deploy.commands.common import add_model_args
from elan_deploy.console import print_table, progress
from elan_deploy.datasets import load_dataset
from elan_deploy.errors import ElanDeployError
from elan_deploy.evaluate import evaluate, torch_sr_function
from elan_deploy.model import load_model
from elan_deploy.results import ResultRow, write_results


def run_eval(args: argparse.Namespace) -> int:
    if args.runtime != "torch" or args.precision != "fp32":
        raise ElanDeployError(f"runtime '{args.runtime}' at '{args.precision}' is not available for eval; use --runtime torch --precision fp32")
    import torch

    loaded = load_model(args.model, args.scale)
    datasets = [load_dataset(name, loaded.config.scale, args.data_root) for name in (args.dataset or ["Set5"])]
    sr_function = torch_sr_function(loaded.model)
    rows: list[ResultRow] = []
    per_image: list[tuple[str, str, float, float]] = []
    with progress() as bar:
        for dataset in datasets:
            task = bar.add_task(f"{dataset.name} x{dataset.scale}", total=len(dataset))
            score = evaluate(sr_function, dataset, on_image=lambda s: bar.advance(task))
            per_image += [(dataset.name, s.name, s.psnr, s.ssim) for s in score.images]
            rows.append(
                ResultRow(
                    model=loaded.config.model_id, runtime="torch", precision="fp32", dataset=dataset.name,
                    images=len(score.images), psnr=round(score.psnr, 4), ssim=round(score.ssim, 4),
                    runtime_version=torch.__version__, precision_used="fp32", threads=torch.get_num_threads(),
                )
            )
    if args.per_image:
        print_table("per image", ("dataset", "image", "PSNR (dB)", "SSIM"), per_image)
    print_table(
        f"{loaded.config.model_id} quality (Y channel, border {loaded.config.scale})",
        ("dataset", "runtime", "precision", "images", "PSNR (dB)", "SSIM"),
        [(r.dataset, r.runtime, r.precision, r.images, r.psnr, r.ssim) for r in rows],
    )
    if args.json:
        write_results(args.json, rows)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Y-PSNR/SSIM of a runtime on Set5/Set14/B100 or a folder")
    add_model_args(p)
    p.add_argument("--runtime", default="torch", help="runtime to evaluate [torch]")
    p.add_argument("--precision", default="fp32", help="precision [fp32]")
    p.add_argument("--dataset", action="append", help="Set5, Set14, B100 or a folder of HR images (repeatable) [Set5]")
    p.add_argument("--data-root", type=Path, help="folder holding Set5/, Set14/, B100/ [$ELAN_DEPLOY_DATA or ../shared/data]")
    p.add_argument("--json", type=Path, help="write results JSON here")
    p.add_argument("--per-image", action="store_true", help="also print every image's score")
    p.set_defaults(handler=run_eval)
