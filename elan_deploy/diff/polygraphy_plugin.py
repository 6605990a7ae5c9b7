"""`polygraphy run --openvino`: the OpenVINO runner as a Polygraphy `run` plugin.

Polygraphy's `run` tool loads every entry point in the `polygraphy.run.plugins` group and
adds the argument groups it returns (pyproject.toml registers `export_argument_groups`), so

    polygraphy run model.onnx --onnxrt --openvino [--openvino-precision bf16]

compares ONNX Runtime and OpenVINO with Polygraphy's own Comparator, and `--openvino` works
with everything else `run` offers (`--onnx-outputs mark all`, `--load-inputs`, `--load-outputs`).
This module is imported by every `polygraphy run`, so it imports neither OpenVINO nor the
rest of the toolkit.
"""

from __future__ import annotations

from polygraphy.tools.args import ModelArgs, OnnxLoadArgs
from polygraphy.tools.args import util as args_util
from polygraphy.tools.args.base import BaseRunnerArgs
from polygraphy.tools.script import make_invocable

OPENVINO_PRECISIONS = ("fp32", "bf16", "fp16")


class OpenVINORunnerArgs(BaseRunnerArgs):
    """
    OpenVINO Inference (elan-deploy): running inference with OpenVINO on the CPU.

    Depends on:

        - ModelArgs
        - OnnxLoadArgs
    """

    def get_name_opt_impl(self) -> tuple[str, str]:
        return "OpenVINO", "openvino"

    def get_extra_help_text_impl(self) -> str:
        return "Needs `pip install openvino`; from elan-deploy."

    def add_parser_args_impl(self) -> None:
        self.group.add_argument(
            "--openvino-precision",
            choices=OPENVINO_PRECISIONS,
            default="fp32",
            help="OpenVINO inference precision, pinned (OpenVINO picks bf16 by itself on CPUs with AMX/AVX-512 BF16). "
            "An INT8 Q/DQ ONNX runs its quantized layers in int8 whatever this says [fp32]",
        )
        self.group.add_argument("--openvino-threads", type=int, default=None, help="OpenVINO inference threads [OpenVINO's default]")

    def parse_impl(self, args) -> None:
        """
        Attributes:
            precision (str): the inference precision, fp32, bf16 or fp16.
            threads (int): inference threads, or None for OpenVINO's default.
        """
        self.precision = args_util.get(args, "openvino_precision")
        self.threads = args_util.get(args, "openvino_threads")

    def add_to_script_impl(self, script) -> None:
        if self.arg_groups[OnnxLoadArgs].must_use_onnx_loader():
            model = self.arg_groups[OnnxLoadArgs].add_to_script(script, serialize_model=True)
        else:
            model = self.arg_groups[ModelArgs].path
        script.add_import(imports=["CompileOpenVINOModel", "OpenVINORunner"], frm="elan_deploy.diff.runners")
        loader = script.add_loader(
            make_invocable("CompileOpenVINOModel", model, precision=self.precision, threads=self.threads),
            "compile_openvino_model",
        )
        script.add_runner(make_invocable("OpenVINORunner", loader))


def export_argument_groups() -> list[BaseRunnerArgs]:
    """The entry point Polygraphy's `run` calls: the argument groups this plugin adds."""
    return [OpenVINORunnerArgs()]
