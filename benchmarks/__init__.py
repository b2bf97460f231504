"""Throughput of request_crypto beside the JavaScript original and the machine's own limit.

`python -m benchmarks [--quick] [--json F]` (or `python scripts/bench.py`) prints one table of
every measured path. One module per path, each a `core.Section`: `elastic` (with the primitive
bound), `jwe`, `large` (5 MB, and peak memory), `batch` (`decrypt_many`) and `receiver` (the
HTTP service under `wrk`); `core` holds the shared method (rounds, paired slices, ratios,
ceilings, the table). Not part of the installed package: nothing in request_crypto imports it.
"""
