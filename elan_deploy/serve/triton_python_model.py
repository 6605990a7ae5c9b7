"""Triton Python-backend model: the pre- or post-processing step of the repository's ensemble.

`elan-deploy triton-repo` copies this file as `<model>-pre/1/model.py` and `<model>-post/1/model.py`
with `prepost.py` beside it; the config parameter `stage` says which step it is. It needs only
NumPy, which every Triton container with the Python backend has.

- pre:  `image` UINT8 [N, H, W, 3] -> `lr` FP32 [N, 3, H', W'] (reflect-padded to multiples of 16)
        and `size` INT32 [N, 2] (H, W), refusing bad requests (`max_pixels` parameter);
- post: `sr` FP32 [N, 3, sH', sW'] and `size` -> `image` UINT8 [N, sH, sW, 3].

A bad request gets an error response for that request only; the model stays loaded.
"""

import json

import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

try:
    from . import prepost
except ImportError:  # loaded as a top-level module
    import prepost


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.stage = params["stage"]
        self.max_pixels = int(params.get("max_pixels", prepost.DEFAULT_MAX_PIXELS))
        if self.stage not in ("pre", "post"):
            raise ValueError(f"parameter 'stage' must be 'pre' or 'post', got {self.stage!r}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outputs = self._pre(request) if self.stage == "pre" else self._post(request)
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except ValueError as exc:  # prepost.BadRequest and NumPy shape errors
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def _pre(self, request):
        image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
        lr, size = prepost.preprocess(image, self.max_pixels)
        return [pb_utils.Tensor("lr", lr), pb_utils.Tensor("size", size)]

    def _post(self, request):
        sr = pb_utils.get_input_tensor_by_name(request, "sr").as_numpy()
        size = pb_utils.get_input_tensor_by_name(request, "size").as_numpy()
        return [pb_utils.Tensor("image", prepost.postprocess(sr, size))]

    def finalize(self):
        pass
