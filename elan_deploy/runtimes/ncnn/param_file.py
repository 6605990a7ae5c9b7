"""ncnn's text `.param` file as layers that can be read, edited and written back unchanged.

Read by the INT8 rewrite (`int8_format`) and the any-size rewrite (`any_size`); tokens are kept
as written (`key=value`, arrays and quoted shape expressions alike), so a layer nobody edits is
written back byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from elan_deploy.errors import ElanDeployError

# The layers ncnn can run in INT8 (the others have no int8 weights path).
QUANTIZABLE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")


@dataclass
class Layer:
    """One `.param` line: type, name, blobs and `key=value` tokens kept as written."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, str] = field(default_factory=dict)

    def get(self, key: int, default: int) -> int:
        return int(self.params.get(str(key), default))

    def line(self) -> str:
        blobs = " ".join([*self.bottoms, *self.tops])
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        return " ".join(filter(None, [f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}", blobs, params]))


@dataclass
class Graph:
    layers: list[Layer]
    blob_count: int

    @classmethod
    def read(cls, path: Path) -> Graph:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if not lines or lines[0].strip() != "7767517":
            raise ElanDeployError(f"'{path}' is not a text ncnn .param file (magic 7767517); rebuild the engine")
        layers = []
        for line in lines[2:]:
            kind, name, nb, nt, *rest = line.split()
            nb, nt = int(nb), int(nt)
            tokens = dict(token.split("=", 1) for token in rest[nb + nt :])
            layers.append(Layer(kind, name, rest[:nb], rest[nb : nb + nt], tokens))
        return cls(layers, int(lines[1].split()[1]))

    def text(self) -> str:
        return "7767517\n" + f"{len(self.layers)} {self.blob_count}\n" + "".join(layer.line() + "\n" for layer in self.layers)

    def consumers(self, blob: str) -> list[Layer]:
        return [layer for layer in self.layers if blob in layer.bottoms]

    def producer(self, blob: str) -> Layer | None:
        return next((layer for layer in self.layers if blob in layer.tops), None)

    def quantizable(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.type in QUANTIZABLE]
