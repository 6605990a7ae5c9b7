"""ncnn's own INT8 format, written in NumPy: the calibration table of `ncnn2table` and the
`.param`/`.bin` rewrite of `ncnn2int8`, so an INT8 engine needs no compiled ncnn tools.

What ncnn runs in INT8, and how the files say so (ncnn's tools/quantize and src/layer):
- Only `Convolution`, `ConvolutionDepthWise` and `InnerProduct` take INT8 here (ELAN's
  attention MatMuls and Softmax have no INT8 layer in ncnn and stay fp32). A layer runs INT8
  when its `.param` line carries `8=` (`int8_scale_term`) and its weights are int8; a layer
  the table leaves out is not rewritten and stays fp32 (`opt.use_int8_inference` touches only
  layers with int8 weights).
- Table (`ncnn2table`): one weight line per layer, `<layer>_param_0 s0 s1 ... ` (one scale
  per output channel, per group for depthwise), then one activation line per layer,
  `<layer> s` (the scale of its input blob); values as C's `%f`, each followed by a space.
  Weight scales are 127/absmax, 31/absmax for 3x3 stride-1 convolutions (ncnn's INT8
  winograd F(4,3) needs 6-bit weights).
- `.bin` (`ncnn2int8`, ModelWriter): weight data behind a 4-byte tag (0 raw fp32,
  0x01306B47 fp16, 0x000D4B38 int8), padded to 4 bytes; bias raw fp32; for a quantized layer
  the weight scales, then the input scale, then (requantize, `int8_scale_term` > 100) the
  output scale, all raw fp32. `int8_scale_term` is 2 for Convolution/InnerProduct (per output
  channel) and 1 for ConvolutionDepthWise (per group).
- Requantize (`fuse_requantize`): a quantized convolution whose output feeds only quantized
  convolutions (directly or through one Split) writes int8 with its consumer's input scale.

Unlike `ncnn2int8`, which stores the weights of every layer it does not quantize as fp16, the
float layers keep their fp32 weights: "kept in float" means fp32 here, the precision the
mixed-precision search measured.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elan_deploy.errors import ElanDeployError
from elan_deploy.fileio import write_bytes_atomic
from elan_deploy.runtimes.ncnn.param_file import QUANTIZABLE, Graph, Layer

TAG_FP32, TAG_FP16, TAG_INT8 = 0, 0x01306B47, 0x000D4B38
# Layer types known to read nothing from the .bin; any other type stops the rewrite (its
# weights could not be skipped safely).
WEIGHTLESS = frozenset({
    "Input", "BinaryOp", "UnaryOp", "Concat", "Crop", "Clip", "Eltwise", "Flatten", "GELU", "HardSigmoid", "HardSwish",
    "Interp", "MatMul", "Noop", "Permute", "PixelShuffle", "Pooling", "ReLU", "Reduction", "Reshape", "Sigmoid",
    "Slice", "Softmax", "Split", "Swish", "TanH",
})
# (bias_term, weight_data_size) param ids: InnerProduct numbers them differently.
_SIZE_KEYS = {"Convolution": (5, 6), "ConvolutionDepthWise": (5, 6), "InnerProduct": (1, 2)}
_BODY = re.compile(r"^body\.(\d+)\.(lfes|gmsas)\.\d+\.(?:(project_inp|project_out)\b)?")


# --- the calibration table -------------------------------------------------------------------

@dataclass(frozen=True)
class Int8Table:
    """Per-layer scales: weight scales per output channel (or group) and the input blob's scale."""

    weights: dict[str, np.ndarray]
    activations: dict[str, float]

    def only(self, layers: Iterable[str]) -> Int8Table:
        """The table restricted to `layers` (a layer left out stays float in the engine)."""
        keep = set(layers)
        return Int8Table({k: v for k, v in self.weights.items() if k in keep}, {k: v for k, v in self.activations.items() if k in keep})

    def text(self) -> str:
        """The table as `ncnn2table` writes it: weight lines first, then activation lines."""
        lines = [f"{name}_param_0 " + "".join(f"{s:f} " for s in scales) for name, scales in self.weights.items()]
        lines += [f"{name} {scale:f} " for name, scale in self.activations.items()]
        return "".join(line + "\n" for line in lines)

    def write(self, path: Path) -> None:
        write_bytes_atomic(path, self.text().encode())

    @classmethod
    def parse(cls, text: str) -> Int8Table:
        """Read a table as `ncnn2int8` does: a key with `_param_` is a weight line, others activations."""
        weights: dict[str, np.ndarray] = {}
        activations: dict[str, float] = {}
        for number, line in enumerate(text.splitlines(), 1):
            key, *values = line.split()
            if not values:
                raise ElanDeployError(f"ncnn INT8 table line {number} ('{key}') has no scale; rebuild the engine")
            if "_param_" in key:
                name, _, index = key.rpartition("_param_")
                if index != "0":
                    raise ElanDeployError(f"ncnn INT8 table line {number}: '{key}' is not a convolution's weight line; rebuild the engine")
                weights[name] = np.array([float(v) for v in values], dtype=np.float32)
            else:
                activations[key] = float(values[0])
        return cls(weights, activations)

    @classmethod
    def read(cls, path: Path) -> Int8Table:
        return cls.parse(Path(path).read_text())


# --- the .bin: where each layer's weights are --------------------------------------------------

@dataclass(frozen=True)
class Weights:
    """A layer's fp32 weights as the .bin holds them (`bias` None without a bias term)."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class Block:
    """The bytes [start, end) of the .bin that `layer` reads; `weights` for quantizable layers."""

    layer: Layer
    start: int
    end: int
    weights: Weights | None


def _memorydata_floats(layer: Layer) -> int:
    if layer.get(21, 1) != 1:
        raise ElanDeployError(f"MemoryData '{layer.name}' is not stored as raw fp32; rebuild the fp32 engine")
    dims = [layer.get(k, 0) for k in (0, 1, 11, 2)]
    return int(np.prod([d for d in dims if d])) if any(dims) else 0


def _read_weights(layer: Layer, data: bytes, offset: int) -> tuple[Weights, int]:
    if layer.get(8, 0):
        raise ElanDeployError(f"layer '{layer.name}' is already INT8; quantize the fp32 engine")
    if layer.type != "InnerProduct" and layer.get(19, 0):
        raise ElanDeployError(f"layer '{layer.name}' takes its weights as an input (dynamic weight); build fp32 or fp16")
    bias_key, size_key = _SIZE_KEYS[layer.type]
    (tag,) = struct.unpack_from("<I", data, offset)
    if tag != TAG_FP32:
        raise ElanDeployError(f"layer '{layer.name}' holds weights tagged {tag:#x}, not raw fp32; quantize the fp32 engine (fp16=0)")
    size = layer.get(size_key, 0)
    weight = np.frombuffer(data, "<f4", size, offset + 4).copy()
    offset += 4 + 4 * size
    bias = None
    if layer.get(bias_key, 0):
        bias = np.frombuffer(data, "<f4", layer.get(0, 0), offset).copy()
        offset += 4 * bias.size
    return Weights(weight, bias), offset


def blocks(graph: Graph, data: bytes, source: Path) -> list[Block]:
    """Every layer's part of the .bin, in order; checks the whole .bin is accounted for."""
    found, offset = [], 0
    for layer in graph.layers:
        if layer.type in QUANTIZABLE:
            weights, end = _read_weights(layer, data, offset)
            found.append(Block(layer, offset, end, weights))
            offset = end
        elif layer.type == "MemoryData":
            end = offset + 4 * _memorydata_floats(layer)
            found.append(Block(layer, offset, end, None))
            offset = end
        elif layer.type not in WEIGHTLESS:
            raise ElanDeployError(f"ncnn layer type {layer.type} ('{layer.name}') is not supported by the INT8 rewrite; build fp32 or fp16")
    if offset != len(data):
        raise ElanDeployError(f"'{source}' holds {len(data)} bytes, its .param describes {offset}; rebuild the engine")
    return found


def read_weights(graph: Graph, bin_path: Path) -> dict[str, Weights]:
    """The fp32 weights of every quantizable layer, by name."""
    return {b.layer.name: b.weights for b in blocks(graph, Path(bin_path).read_bytes(), bin_path) if b.weights is not None}


# --- scales and the rewrite -----------------------------------------------------------------

def weight_bits_limit(layer: Layer) -> int:
    """127, or 31 for a 3x3 stride-1 dilation-1 Convolution (ncnn2table's rule for INT8 winograd)."""
    k = (layer.get(1, 0), layer.get(11, layer.get(1, 0)))
    s = (layer.get(3, 1), layer.get(13, layer.get(3, 1)))
    d = (layer.get(2, 1), layer.get(12, layer.get(2, 1)))
    return 31 if layer.type == "Convolution" and k == (3, 3) and s == (1, 1) and d == (1, 1) else 127


def _channels(layer: Layer) -> int:
    return layer.get(7, 1) if layer.type == "ConvolutionDepthWise" else layer.get(0, 0)


def weight_scales(layer: Layer, weights: Weights) -> np.ndarray:
    """limit/absmax per output channel (per group for depthwise); 1 for an all-zero channel."""
    absmax = np.abs(weights.weight.reshape(_channels(layer), -1)).max(axis=1)
    return np.where(absmax > 0, weight_bits_limit(layer) / np.where(absmax > 0, absmax, 1), 1.0).astype(np.float32)


def activation_scale(absmax: float) -> float:
    """127/absmax of a layer's input blob over the calibration crops (1 for an all-zero blob)."""
    return 127.0 / absmax if absmax > 0 else 1.0


def to_int8(values: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """ncnn's float2int8 of values*scale (float32): round half away from zero, clamp to [-127, 127]."""
    scaled = np.asarray(values, np.float32) * np.asarray(scale, np.float32)
    return np.clip(np.trunc(scaled + np.copysign(np.float32(0.5), scaled)), -127, 127).astype(np.int8)


def _f32(values: np.ndarray | float) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def _requantize_targets(graph: Graph, quantized: set[str]) -> dict[str, str]:
    """Quantized conv -> the quantized consumer whose input scale it writes int8 with."""
    targets = {}
    for layer in graph.layers:
        if layer.name not in quantized or layer.type == "InnerProduct":
            continue
        readers = graph.consumers(layer.tops[0])
        if len(readers) == 1 and readers[0].type == "Split":
            readers = [r for top in readers[0].tops for r in graph.consumers(top)]
        convs = [r for r in readers if r.type in ("Convolution", "ConvolutionDepthWise") and len(r.bottoms) == 1]
        if readers and len(convs) == len(readers) and all(r.name in quantized for r in readers):
            targets[layer.name] = readers[0].name
    return targets


def _set_scale_term(layer: Layer, term: int) -> None:
    """`8=term` on the layer's line, where ModelWriter puts it (right after weight_data_size)."""
    size_key = str(_SIZE_KEYS[layer.type][1])
    items = [(k, v) for k, v in layer.params.items() if k != "8"]
    at = next((i + 1 for i, (k, _) in enumerate(items) if k == size_key), len(items))
    layer.params = dict([*items[:at], ("8", str(term)), *items[at:]])


def _int8_block(layer: Layer, weights: Weights, table: Int8Table, requantize_with: str | None) -> bytes:
    """The layer's .bin bytes as ncnn2int8 writes them; sets its `int8_scale_term`."""
    scales = table.weights[layer.name]
    if scales.size != _channels(layer):
        raise ElanDeployError(f"the INT8 table has {scales.size} weight scales for '{layer.name}', which has {_channels(layer)}; rebuild the engine")
    int8 = to_int8(weights.weight.reshape(scales.size, -1), scales[:, None]).tobytes()
    parts = [struct.pack("<I", TAG_INT8), int8, b"\0" * (-len(int8) % 4)]
    if weights.bias is not None:
        parts.append(_f32(weights.bias))
    parts += [_f32(scales), _f32(table.activations[layer.name])]
    term = 1 if layer.type == "ConvolutionDepthWise" else 2
    if requantize_with is not None:
        term += 100
        parts.append(_f32(table.activations[requantize_with]))
    _set_scale_term(layer, term)
    return b"".join(parts)


def quantize_files(param: Path, bin_path: Path, table: Int8Table, out_param: Path, out_bin: Path) -> list[str]:
    """Write the INT8 `.param`/`.bin` as ncnn2int8 does with `table`; returns the INT8 layers.

    As in ncnn2int8, a layer is quantized when the table has its activation line, and then
    must have its weight line; every other layer is copied unchanged.
    """
    graph = Graph.read(param)
    data = Path(bin_path).read_bytes()
    parts = blocks(graph, data, bin_path)
    names = {b.layer.name for b in parts if b.weights is not None}
    quantized = set(table.activations) & names
    missing = sorted(quantized - set(table.weights)) + sorted(set(table.activations) - names)
    if missing:
        raise ElanDeployError(f"the INT8 table does not fit this engine (layer '{missing[0]}'); rebuild the engine")
    targets = _requantize_targets(graph, quantized)
    out = []
    for b in parts:
        if b.weights is not None and b.layer.name in quantized:
            out.append(_int8_block(b.layer, b.weights, table, targets.get(b.layer.name)))
        else:
            out.append(data[b.start : b.end])
    write_bytes_atomic(out_param, graph.text().encode())
    write_bytes_atomic(out_bin, b"".join(out))
    return [b.layer.name for b in parts if b.layer.name in quantized]


# --- layer groups: what the mixed-precision search keeps in float together ----------------------

def weight_key(weight: np.ndarray) -> tuple[int, str]:
    """Identifies a conv by its fp32 weights (size and digest): PNNX keeps them, not the module names."""
    data = np.ascontiguousarray(weight, dtype=np.float32)
    return data.size, hashlib.sha1(data.tobytes()).hexdigest()


def _group_name(module: str) -> str:
    m = _BODY.match(module + ".")
    if m is None:
        return module.split(".")[0]  # head, tail
    block, sub, proj = m.groups()
    return f"body.{block}.{'lfe' if sub == 'lfes' else proj or sub}"


def layer_groups(graph: Graph, weights: dict[str, Weights], modules: dict[tuple[int, str], str]) -> dict[str, list[str]]:
    """Quantizable layers grouped like the ONNX recipe's groups (`calibration.layers`): head,
    tail, body.B.lfe (shift convs and 1x1 convs of both LFEs), body.B.project_inp/out.

    A convolution is named by the deploy module with the same weights (`int8_search.conv_modules`); a
    depthwise (shift) convolution joins the group of the convolution it feeds; a layer with
    neither is its own group.
    """
    group_of: dict[str, str] = {}
    layers = graph.quantizable()
    for layer in layers:
        if layer.type != "ConvolutionDepthWise":
            module = modules.get(weight_key(weights[layer.name].weight))
            group_of[layer.name] = _group_name(module) if module else layer.name
    for layer in layers:
        if layer.type == "ConvolutionDepthWise":
            readers = graph.consumers(layer.tops[0])
            group_of[layer.name] = group_of.get(readers[0].name, layer.name) if len(readers) == 1 else layer.name
    groups: dict[str, list[str]] = {}
    for layer in layers:
        groups.setdefault(group_of[layer.name], []).append(layer.name)
    return groups


def table_for(graph: Graph, weights: dict[str, Weights], input_absmax: dict[str, float]) -> Int8Table:
    """The full table: weight scales from the weights, activation scales from the inputs' absmax."""
    layers = graph.quantizable()
    return Int8Table(
        {layer.name: weight_scales(layer, weights[layer.name]) for layer in layers},
        {layer.name: activation_scale(input_absmax[layer.name]) for layer in layers},
    )
