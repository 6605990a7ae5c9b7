"""Benchmark harness: every runtime × precision, latency and quality, one results file."""
