"""Benchmark workloads, defined inside the package so ``nnx bench`` works from a wheel.

Users come to nnx to compare hardware, so the suite is part of the product:

* ``workloads``: the named workloads (tutorial, sweep, large-hidden, blas-bound,
  xor, crossover), their tiny/quick/full size sets and FLOP/byte counts;
* ``targets``: what is timed: the tutorials' plain NumPy (``tutorial-code``, the
  baseline of every speed-up), each nnx backend, the bare matrix products;
* ``peers``: the same math in PyTorch and JAX, when installed;
* ``runner``: warm-up excluded, calibrated rounds, per-pass rates;
* ``results`` / ``machine``: pytest-benchmark JSON with machine, threads, commit;
* ``report``: the speed-up table, crossover points and throughput plot;
* ``command``: ``nnx bench``.

The pytest-benchmark suites in ``benchmarks/`` time the same targets.
"""
