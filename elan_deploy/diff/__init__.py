"""Cross-runtime and layer-by-layer comparison on Polygraphy (`elan-deploy diff`).

- `spec`: `runtime:precision` engine specs; the first is the reference.
- `inputs`: natural-image feed dicts and their Polygraphy `--load-inputs` file.
- `engines`: specs -> engines built through the engine cache -> Polygraphy runners.
- `runners`: Polygraphy runners for OpenVINO (with its loader) and for any elan-deploy engine.
- `metrics`: Polygraphy PSNR compare functions with image (255) and per-tensor peaks.
- `outputs`: every engine against the reference on the network output (Comparator).
- `graph`, `layers`, `plot`: every intermediate tensor marked as an output, compared in graph
  order, the first divergence, and the error-against-depth plot.
- `run`: `run_diff`, which puts these together, and the JSON document.
- `polygraphy_plugin`: `polygraphy run --openvino` (entry point `polygraphy.run.plugins`).

Importing this package imports nothing: Polygraphy imports the plugin on every `polygraphy run`.
"""
