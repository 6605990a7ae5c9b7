"""What an engine is built from: a checkpoint, its export strategies and the ONNX hand-over file.

ONNX-consuming runtimes (ONNX Runtime, OpenVINO, TensorRT) read `onnx_path()`; Core ML and
PyTorch convert from the deployable torch module, because coremltools no longer reads ONNX.
Both come from the same checkpoint and export config, so all engines compute the same network.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import elan_deploy
from typing import TYPE_CHECKING

from elan_deploy.export.strategies import DEFAULT_WINDOWS
from elan_deploy.fileio import file_sha256
from elan_deploy.geometry import SizeRules

if TYPE_CHECKING:  # the checkpoint module imports torch; engines loaded from files never need it
    from elan_deploy.console import StepProgress
    from elan_deploy.model.checkpoint import LoadedCheckpoint
    from elan_deploy.model.range_guard import RangeGuard
from elan_deploy.scratch import cache_root


@lru_cache(maxsize=1)
def export_code_digest() -> str:
    """sha256 of the code that writes the ONNX (the `export` and `model` packages).

    Part of the fingerprint, so a changed rewrite re-exports and rebuilds instead of reusing
    an engine cached from the previous form of the graph under the same version number.
    """
    digest = hashlib.sha256()
    root = Path(elan_deploy.__file__).parent
    for path in sorted([*(root / "export").rglob("*.py"), *(root / "model").rglob("*.py")]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _digest_file(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".sha256")


@dataclass
class ModelSource:
    loaded: LoadedCheckpoint
    shift: str = "depthwise"
    attention: str = "shared"
    windows: str = DEFAULT_WINDOWS
    opset: int | None = None
    onnx: Path | None = None  # a given ONNX file; otherwise exported on demand into `work_dir`
    work_dir: Path | None = None
    guard: bool = True  # clamp features to their T91 ranges (`model.range_guard`); False: the paper model
    _exported: Path | None = field(default=None, repr=False)
    _range_guard: RangeGuard | None = field(default=None, repr=False)
    _guard_resolved: bool = field(default=False, repr=False)

    @property
    def scale(self) -> int:
        return self.loaded.config.scale

    @property
    def model_id(self) -> str:
        return self.loaded.config.model_id

    @property
    def size_rules(self) -> SizeRules:
        """The network's scale and input multiple (padding, tiling and engine shapes follow them)."""
        config = self.loaded.config
        return SizeRules(config.scale, config.window_multiple)

    def export_config(self):
        from elan_deploy.export import ExportConfig

        kwargs = {"shift": self.shift, "attention": self.attention, "windows": self.windows}
        if self.opset is not None:
            kwargs["opset"] = self.opset
        return ExportConfig(**kwargs)

    def __getstate__(self) -> dict:
        """Pickled with the checkpoint as one `torch.save` blob: bench workers and Ray actors get an
        `EngineLoader` holding this source, and torch's multiprocessing pickler would otherwise share
        every tensor through its own file descriptor, more than a forkserver passes to a process."""
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(self.loaded, buffer)
        return {**self.__dict__, "loaded": buffer.getvalue()}

    def __setstate__(self, state: dict) -> None:
        import io

        import torch

        loaded = torch.load(io.BytesIO(state["loaded"]), weights_only=False)  # written by __getstate__ above
        self.__dict__.update({**state, "loaded": loaded})

    def range_guard(self, progress: StepProgress | None = None) -> RangeGuard | None:
        """The clamps this network carries: measured on T91 for a checkpoint (cached; a first
        measurement shows on `progress` as its own step), read from a given ONNX file's metadata,
        or None for the unguarded paper model."""
        if not self._guard_resolved:
            if self.onnx is not None:
                from elan_deploy.export.metadata import guard_from_metadata, read_props

                self._range_guard = guard_from_metadata(read_props(self.onnx))
            elif self.guard:
                from elan_deploy.calibration.ranges import calibrated_guard

                self._range_guard = calibrated_guard(self.loaded, progress=progress)
            self._guard_resolved = True
        return self._range_guard

    @property
    def guard_label(self) -> str:
        """"guarded" or "unguarded", for reports and logs."""
        return "unguarded" if self.range_guard() is None else "guarded"

    def reference_module(self):
        """The PyTorch network the torch runtimes run: the reference ELAN, with the guard's clamps if any."""
        from elan_deploy.model.range_guard import guard_reference

        guard = self.range_guard()
        return self.loaded.model if guard is None else guard_reference(self.loaded.model, guard)

    def fingerprint(self) -> str:
        """Identifies the network an engine computes (keys the engine cache), guard ranges included."""
        if self.onnx is not None:
            return file_sha256(self.onnx)
        guard = self.range_guard()
        ranges = "unguarded" if guard is None else guard.digest
        text = f"{self.loaded.sha256}:{self.shift}:{self.attention}:{self.windows}:{self.opset}:{elan_deploy.__version__}:{export_code_digest()}:{ranges}"
        return hashlib.sha256(text.encode()).hexdigest()

    def onnx_path(self) -> Path:
        """The ONNX hand-over file: the given one, or the verified export in `work_dir`.

        The export is reused only while its bytes match the sha256 recorded beside it when it
        was written (`.sha256`); a flipped bit or a truncated file is re-exported, never handed
        to a runtime. A per-file lock makes concurrent builders export once.
        """
        if self.onnx is not None:
            return self.onnx
        if self._exported is None or not self._exported.exists():
            from filelock import FileLock

            from elan_deploy.export import export_onnx
            from elan_deploy.fileio import write_bytes_atomic

            folder = self.work_dir or cache_root() / "onnx"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self.model_id}-{self.fingerprint()[:16]}.fp32.onnx"
            with FileLock(str(folder / f".{path.name}.lock")):
                if self._verified_digest(path) is None:
                    if path.exists():
                        warnings.warn(f"exported ONNX {path} does not match its recorded sha256; exporting it again", stacklevel=2)
                    report = export_onnx(self.loaded, path, self.export_config(), guard=self.range_guard())
                    write_bytes_atomic(_digest_file(path), f"{report.sha256}\n".encode())
            self._exported = path
        return self._exported

    @staticmethod
    def _verified_digest(path: Path) -> str | None:
        """The file's sha256 when it matches the digest recorded at export, else None."""
        try:
            recorded = _digest_file(path).read_text().strip()
        except OSError:
            return None
        return recorded if path.is_file() and file_sha256(path) == recorded else None

    def onnx_sha256(self, export: bool = False) -> str | None:
        """sha256 of the ONNX engines are built from: the given file, or the verified export.

        Without `export`, None when nothing has been exported yet (no export is started).
        """
        if self.onnx is not None:
            return file_sha256(self.onnx) if self.onnx.is_file() else None
        if export:
            self.onnx_path()
        if self._exported is not None:
            return self._verified_digest(self._exported)
        folder = self.work_dir or cache_root() / "onnx"
        return self._verified_digest(folder / f"{self.model_id}-{self.fingerprint()[:16]}.fp32.onnx")

    def deploy_module(self, windows: str | None = None):
        """The export form of the network; `windows` overrides the window form (ncnn needs "rank4")."""
        from elan_deploy.export import build_deploy_model

        return build_deploy_model(
            self.loaded.model, shift=self.shift, attention=self.attention, windows=windows or self.windows, guard=self.range_guard()
        ).eval()


def copy_onnx(source: Path, target: Path) -> None:
    """Copy an ONNX file with its external data inlined, so the copy stands alone.

    A model saved with external data keeps its weights in files next to it; copying the .onnx
    alone would leave the engine without weights. Models over protobuf's 2 GB limit keep their
    data external, written beside the copy.
    """
    import shutil

    import onnx

    model = onnx.load(str(source), load_external_data=False)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        shutil.copyfile(source, target)
        return
    model = onnx.load(str(source))
    if model.ByteSize() < 2**31 - 2**20:
        onnx.save(model, str(target))
    else:
        onnx.save(model, str(target), save_as_external_data=True, location=f"{target.name}.data")
