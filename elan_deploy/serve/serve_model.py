"""Triton Python-backend entry point of `elan-deploy serve`: PyTriton's proxy model, answering each request on its own.

`elan-deploy serve` sends this file to Triton as the model's `model.py`, beside PyTriton's own
proxy files (its `model.py` renamed `pytriton_proxy_model.py`) and `prepost.py`. It runs in the
Python-backend stub process, between Triton and PyTriton, and needs only what PyTriton's proxy needs
(NumPy, pyzmq).

PyTriton 0.7 answers a batch of requests as one: an exception in the inference callable fails
every request of the batch with HTTP 500 / gRPC INTERNAL and a traceback naming server paths,
and a zero-size tensor breaks its shared-memory serializer before the callable runs. Triton's
dynamic batcher groups requests of equal H and W whatever their N, so a request over the pixel
limit, refused by the callable, would fail the valid requests batched with it. Here:

- each request is checked with `prepost.check_images` before PyTriton sees the batch; a bad one
  gets its own one-line error, INVALID_ARG (HTTP 400, gRPC INVALID_ARGUMENT), and the others of
  its batch go on to the callable;
- once the server drains (SIGINT/SIGTERM), the callable answers the requests it did not start
  with an empty response, which becomes UNAVAILABLE (HTTP 503, gRPC UNAVAILABLE) "server
  shutting down"; when Triton finalizes the model (no request left in it), the model creates
  the file named by the `unloaded-flag` parameter, which the draining server waits for;
- a failure of the callable itself (an engine error, not a bad request) still fails its whole
  batch, but each client gets one line, the exception's message (code INTERNAL); the traceback
  stays in the server's log.
"""

import json

import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

from . import prepost
from .pytriton_proxy_model import TritonPythonModel as PyTritonProxyModel

INPUT = OUTPUT = "image"
SHUTTING_DOWN = "server shutting down: this server takes no new work; send the request again (to another replica)"


def error_response(message: str, code) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


class TritonPythonModel(PyTritonProxyModel):
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.max_pixels = int(params["elan_deploy.max_pixels"])
        self.unloaded_flag = params["unloaded-flag"]
        super().initialize(args)

    def finalize(self):
        """Triton finalizes the model once no request is left in it: tell the draining server so."""
        super().finalize()
        open(self.unloaded_flag, "w").close()

    def execute(self, requests):
        refusals = [self._refusal(request) for request in requests]
        accepted = [request for request, refusal in zip(requests, refusals) if refusal is None]
        answers = iter(self._run(accepted))
        return [
            next(answers) if refusal is None else error_response(refusal, pb_utils.TritonError.INVALID_ARG)
            for refusal in refusals
        ]

    def _refusal(self, request):
        """None when the request may run, else the one-line reason it may not."""
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
        if tensor is None:
            return f"input '{INPUT}' is missing"
        try:
            prepost.check_images(tensor.as_numpy(), self.max_pixels)
        except prepost.BadRequest as exc:
            return str(exc)
        return None

    def _run(self, requests):
        if not requests:
            return []
        try:
            responses = super().execute(requests)
        except pb_utils.TritonModelException as exc:
            message = prepost.last_error_line(str(exc))
            return [error_response(message, pb_utils.TritonError.INTERNAL) for _ in requests]
        return [
            response if response is not None and pb_utils.get_output_tensor_by_name(response, OUTPUT) is not None
            else error_response(SHUTTING_DOWN, pb_utils.TritonError.UNAVAILABLE)  # the callable skipped it: draining
            for response in responses
        ]
