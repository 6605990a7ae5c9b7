"""Checkpoint loading: safe unpickling, layout detection, key mapping and config inference.

Two layouts exist in the wild: the official ELAN code's (`modules_lfe.lfe_0.conv0.shift_conv…`),
which is what `ELAN.state_dict()` produces, and Fried Rice Lab's BasicSR port
(`modules_lfe.0.lfe.0.mask`, `head.weight`). Both are mapped to the official names and loaded
strictly, so a missing or extra tensor is an error rather than a silently random layer.
"""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from elan_deploy.errors import CheckpointError
from elan_deploy.fileio import file_sha256  # noqa: F401 - re-exported: callers import it from here
from elan_deploy.model.config import ELANConfig, SUPPORTED_SCALES, get_config
from elan_deploy.model.elan import ELAN, shift_kernel

BUNDLED_WEIGHTS = Path(__file__).with_name("weights") / "ELAN-light_x4_FRL.pth"
BUNDLED_SHA256 = "433400f0b3182d1c0e363edd122a070d04215283621b968367d2caac2de10493"
BUNDLED_MODEL = "elan-light"
BUNDLED_SCALE = 4

_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model")
_FRL_LFE = re.compile(r"^body\.(\d+)\.modules_lfe\.(\d+)\.lfe\.([02])\.(weight|bias|mask)$")
_FRL_GMSA = re.compile(r"^body\.(\d+)\.modules_gmsa\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready for inference plus where it came from (recorded in exported artifacts)."""

    model: ELAN
    config: ELANConfig
    path: Path
    sha256: str
    layout: str  # "official" or "frl"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Unpickle with `weights_only=True` and unwrap the usual training wrappers."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a folder; pass the path of an ELAN .pth file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; pass the path of an ELAN .pth file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refused to load '{path}': it holds Python objects, not just tensors ({first[:120]}); "
            "use a checkpoint saved with torch.save(state_dict)"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, io.UnsupportedOperation) as exc:
        raise CheckpointError(f"cannot read checkpoint '{path}': {_first_sentence(exc)}; pass an ELAN .pth file") from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"'{path}' is not a state_dict of tensors; pass an ELAN .pth checkpoint")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _first_sentence(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's text, shortened at a word boundary, never mid-word."""
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
    if not text:
        return "the file is corrupt or not a PyTorch checkpoint"
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"
    return text


def _check_finite_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """NaN or Inf weights would upscale every image to black (or garbage) with no error."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"checkpoint '{path.name}' has {bad} NaN/Inf value(s) in '{key}'; the weights are corrupt "
                "(a diverged training run or a damaged file): use another checkpoint"
            )


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    if "head.0.weight" in state and any(".modules_lfe.lfe_0." in k for k in state):
        return "official"
    if "head.weight" in state and any(_FRL_LFE.match(k) for k in state):
        return "frl"
    sample = ", ".join(sorted(state)[:3])
    raise CheckpointError(
        f"not an ELAN checkpoint (keys start with {sample}); pass an ELAN or ELAN-light checkpoint"
    )


def frl_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Fried Rice Lab keys to the official ones (tensors unchanged)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("head."):
            out["head.0." + key[len("head.") :]] = value
        elif m := _FRL_LFE.match(key):
            block, lfe, conv, kind = m.groups()
            base = f"body.{block}.modules_lfe.lfe_{lfe}.conv{0 if conv == '0' else 1}.shift_conv"
            out[f"{base}.weight" if kind == "mask" else f"{base}.conv1x1.{kind}"] = value
        elif m := _FRL_GMSA.match(key):
            block, gmsa, rest = m.groups()
            out[f"body.{block}.modules_gmsa.gmsa_{gmsa}.{rest}"] = value
        else:
            out[key] = value
    return out


def infer_config(state: dict[str, torch.Tensor]) -> ELANConfig:
    """Read width, depth, sharing and scale off the tensors of an official-layout state_dict."""
    try:
        channels = state["head.0.weight"].shape[0]
        tail_out = state["tail.0.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"ELAN checkpoint lacks tensor {exc}; the file is incomplete") from None
    scale = round((tail_out / 3) ** 0.5)
    if 3 * scale * scale != tail_out or scale not in SUPPORTED_SCALES:
        raise CheckpointError(f"ELAN tail has {tail_out} channels, which is no scale in {SUPPORTED_SCALES}")
    elabs = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    gmsas = {k.split(".")[3] for k in state if k.startswith("body.0.modules_gmsa.")}
    n_share = len(gmsas) - 1
    blocks = len(elabs) * (1 + n_share)
    for name in ("elan-light", "elan"):
        cfg = get_config(name, scale)
        if (cfg.channels, cfg.blocks, cfg.n_share) == (channels, blocks, n_share):
            return cfg
    return ELANConfig(name=f"elan-c{channels}-m{blocks}-s{n_share}", scale=scale, channels=channels, blocks=blocks, n_share=n_share)


def _check_fixed_tensors(state: dict[str, torch.Tensor]) -> None:
    """The shift taps are not learned: a checkpoint whose taps differ is another network."""
    for key, value in state.items():
        if key.endswith(".shift_conv.weight") and not torch.equal(value, shift_kernel(value.shape[0])):
            raise CheckpointError(f"tensor '{key}' is not ELAN's fixed shift pattern; the checkpoint is of another architecture")


def check_expected(found: ELANConfig, expected: ELANConfig | None, scale: int | None) -> None:
    if scale is not None and found.scale != scale:
        raise CheckpointError(f"scale mismatch: the checkpoint is x{found.scale} but x{scale} was requested; pass --scale {found.scale}")
    if expected is not None:
        got = (found.channels, found.blocks, found.n_share)
        want = (expected.channels, expected.blocks, expected.n_share)
        if got != want:
            raise CheckpointError(
                f"architecture mismatch: expected {expected.name} (channels, blocks, n_share) = {want}, found {got}"
            )


def load_checkpoint(
    path: Path | str, *, expected: ELANConfig | None = None, scale: int | None = None
) -> LoadedCheckpoint:
    """Load any supported ELAN checkpoint into an eval-mode reference model."""
    path = Path(path)
    state = read_state_dict(path)
    layout = detect_layout(state)
    if layout == "frl":
        state = frl_to_official(state)
    config = infer_config(state)
    check_expected(config, expected, scale)
    _check_fixed_tensors(state)
    _check_finite_tensors(state, path)
    model = ELAN(config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatch: torch lists every tensor on many lines
        found = re.search(r"size mismatch for ([\w.]+): copying a param with shape (torch.Size\(\[[^\]]*\]\))", str(exc))
        detail = f"tensor '{found.group(1)}' has shape {found.group(2)}" if found else _first_sentence(exc)
        raise CheckpointError(
            f"checkpoint '{path.name}' does not fit {config.model_id}: {detail}; the file is damaged or of another ELAN variant"
        ) from None
    if missing or unexpected:
        detail = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
        raise CheckpointError(f"checkpoint '{path.name}' does not fit {config.model_id}: {detail}")
    model.eval()
    return LoadedCheckpoint(model=model, config=config, path=path, sha256=file_sha256(path), layout=layout)


def load_bundled(name: str = BUNDLED_MODEL, scale: int = BUNDLED_SCALE) -> LoadedCheckpoint:
    """The pretrained ELAN-light x4 that ships with the package, integrity-checked."""
    if (name, scale) != (BUNDLED_MODEL, BUNDLED_SCALE):
        get_config(name, scale)  # validates the name and scale first
        raise CheckpointError(
            f"no bundled weights for {name} x{scale} (only {BUNDLED_MODEL} x{BUNDLED_SCALE} ships); pass --model PATH to a checkpoint"
        )
    digest = file_sha256(BUNDLED_WEIGHTS)
    if digest != BUNDLED_SHA256:
        raise CheckpointError(f"bundled weights '{BUNDLED_WEIGHTS}' are corrupt (sha256 {digest[:12]}…); reinstall elan-deploy")
    loaded = load_checkpoint(BUNDLED_WEIGHTS, expected=get_config(name, scale), scale=scale)
    return replace(loaded, sha256=digest)


def load_model(model: str = BUNDLED_MODEL, scale: int = BUNDLED_SCALE) -> LoadedCheckpoint:
    """Resolve the CLI's `--model NAME|PATH`: a config name means bundled weights, else a file."""
    if Path(model).suffix in {".pth", ".pt", ".ckpt", ".bin"} or Path(model).exists():
        return load_checkpoint(model, scale=scale)
    return load_bundled(model, scale)


def save_official(model: ELAN, path: Path | str) -> None:
    """Save in the official layout (what `ELAN.state_dict()` produces)."""
    torch.save(model.state_dict(), path)
