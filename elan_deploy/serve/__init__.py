"""Serving on Triton Inference Server.

- `server`: `elan-deploy serve`, the Upscaler behind one Triton model on PyTriton's bundled tritonserver;
- `repository`: `elan-deploy triton-repo`, a model repository for Triton's own backends plus an ensemble;
- `prepost`: the request checks and pre/post-processing both share (NumPy only);
- `loadtest`: `elan-deploy loadtest`, a bounded load test with tritonclient, one run per concurrency level;
- `request_images`: the images the load test sends.

Nothing here opens a runtime: the commands hand in an Upscaler or an engine folder.
"""
