"""Benchmark workloads, defined inside the package so ``nnx bench`` works from a wheel."""
