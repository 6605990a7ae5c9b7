"""`elan-deploy eval`: paper-protocol quality of one runtime × precision on benchmark datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from elan_deploy.commands.common import add_engine_args, add_model_args, loader_from_args, warn_if_precision_differs, with_first_use_steps
from elan_deploy.console import print_table, progress
from elan_deploy.datasets import load_dataset
from elan_deploy.evaluate import evaluate
from elan_deploy.results import ResultRow, write_results
from elan_deploy.upscale import Upscaler


def _model_label(source) -> str:
    """Which network ran: the paper model, or it with the range guard's clamps."""
    return "unguarded paper model" if source.range_guard() is None else "range-guarded model; --no-guard for the paper model"


def run_eval(args: argparse.Namespace) -> int:
    from elan_deploy.provenance import check_output_file

    if args.json is not None:
        check_output_file(args.json, "--json", args.overwrite)
    datasets = [load_dataset(name, args.scale, args.data_root) for name in (args.dataset or ["Set5"])]
    loader = loader_from_args(args)
    source, engine, shapes = loader.source, with_first_use_steps(loader, loader.open), loader.engine_shapes
    warn_if_precision_differs(engine.info, args.precision)
    upscaler = Upscaler(engine, source.scale, tile=None, shapes=shapes if shapes.is_static else None, multiple=source.size_rules.multiple)
    info = engine.info
    rows: list[ResultRow] = []
    per_image: list[tuple[str, str, float, float]] = []
    with progress() as bar:
        for dataset in datasets:
            task = bar.add_task(f"{dataset.name} x{dataset.scale}", total=len(dataset))
            score = evaluate(upscaler, dataset, on_image=lambda s: bar.advance(task))
            per_image += [(dataset.name, s.name, s.psnr, s.ssim) for s in score.images]
            rows.append(
                ResultRow(
                    model=source.model_id, runtime=info.runtime, precision=info.precision.value, dataset=dataset.name,
                    images=len(score.images), psnr=round(score.psnr, 4), ssim=round(score.ssim, 4),
                    runtime_version=info.runtime_version, precision_used=info.precision_used, threads=info.threads,
                    extra={"guard": source.guard_label, **({"shift": source.shift, "attention": source.attention} if info.runtime != "torch" else {})},
                )
            )
    if args.per_image:
        print_table("per image", ("dataset", "image", "PSNR (dB)", "SSIM"), per_image)
    print_table(
        f"{source.model_id} quality (Y channel, border {source.scale}; {_model_label(source)})",
        ("dataset", "runtime", "precision", "used", "images", "PSNR (dB)", "SSIM"),
        [(r.dataset, r.runtime, r.precision, r.precision_used, r.images, r.psnr, r.ssim) for r in rows],
    )
    if args.json:
        write_results(args.json, rows)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Y-PSNR/SSIM of a runtime on Set5/Set14/B100 or a folder")
    add_model_args(p)
    # The reference PyTorch model by default: the paper's figures are measured on it; pass
    # --runtime to score an engine the way `build`/`upscale` run it.
    add_engine_args(p, default_runtime="torch")
    p.add_argument("--dataset", action="append", help="Set5, Set14, B100 or a folder of HR images (repeatable) [Set5]")
    p.add_argument("--data-root", type=Path, help="folder holding Set5/, Set14/, B100/ [$ELAN_DEPLOY_DATA or ../shared/data]")
    p.add_argument("--json", type=Path, help="write results JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file even if this tool did not write it")
    p.add_argument("--per-image", action="store_true", help="also print every image's score")
    p.set_defaults(handler=run_eval)
