"""Precision conversion of the exported ONNX: typed FP16 now, INT8 Q/DQ calibrated on T91."""
