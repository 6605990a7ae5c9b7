"""What an engine is built from: a checkpoint, its export strategies and the ONNX hand-over file.

ONNX-consuming runtimes (ONNX Runtime, OpenVINO, TensorRT) read `onnx_path()`; Core ML and
PyTorch convert from the deployable torch module, because coremltools no longer reads ONNX.
Both come from the same checkpoint and export config, so all engines compute the same network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import elan_deploy
from elan_deploy.model.checkpoint import LoadedCheckpoint, file_sha256


@dataclass
class ModelSource:
    loaded: LoadedCheckpoint
    shift: str = "depthwise"
    attention: str = "shared"
    opset: int | None = None
    onnx: Path | None = None  # a given ONNX file; otherwise exported on demand into `work_dir`
    work_dir: Path | None = None
    _exported: Path | None = field(default=None, repr=False)

    @property
    def scale(self) -> int:
        return self.loaded.config.scale

    @property
    def model_id(self) -> str:
        return self.loaded.config.model_id

    def export_config(self):
        from elan_deploy.export import ExportConfig

        kwargs = {"shift": self.shift, "attention": self.attention}
        if self.opset is not None:
            kwargs["opset"] = self.opset
        return ExportConfig(**kwargs)

    def fingerprint(self) -> str:
        """Identifies the network an engine computes (keys the engine cache)."""
        if self.onnx is not None:
            return file_sha256(self.onnx)
        text = f"{self.loaded.sha256}:{self.shift}:{self.attention}:{self.opset}:{elan_deploy.__version__}"
        return hashlib.sha256(text.encode()).hexdigest()

    def onnx_path(self) -> Path:
        if self.onnx is not None:
            return self.onnx
        if self._exported is None or not self._exported.exists():
            from elan_deploy.export import export_onnx

            folder = self.work_dir or Path.home() / ".cache" / "elan-deploy" / "onnx"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self.model_id}-{self.fingerprint()[:16]}.fp32.onnx"
            if not path.exists():
                export_onnx(self.loaded, path, self.export_config())
            self._exported = path
        return self._exported

    def deploy_module(self):
        from elan_deploy.export import build_deploy_model

        return build_deploy_model(self.loaded.model, shift=self.shift, attention=self.attention).eval()
