"""Benchmark harness for Tidings and its peers (issue 3).

`python -m benchmarks --help` runs the scenarios; `benchmarks.loadgen` is the load
generator process; `benchmarks.peers` holds the minimal broadcast servers compared
against Tidings.
"""
