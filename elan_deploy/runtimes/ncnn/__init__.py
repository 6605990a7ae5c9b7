"""ncnn's INT8 path: `int8_format` writes ncnn's own table and INT8 `.param`/`.bin` (what
`ncnn2table` and `ncnn2int8` write), `int8_search` calibrates and picks the layers kept fp32.
The runtime itself is `elan_deploy.runtimes.ncnn_rt`."""
