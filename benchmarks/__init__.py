"""Benchmarks: scripts that print throughput and ratios (never timed tests)."""
