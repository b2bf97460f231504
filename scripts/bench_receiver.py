"""Receiver throughput on loopback: `python scripts/bench_receiver.py [--bodies N] [--clients N]`.

Prints the figures of `request_crypto.receiver.bench.measure_receiver_throughput` as JSON.
"""

from __future__ import annotations

import argparse
import json

from request_crypto.receiver.bench import measure_receiver_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bodies", type=int, default=400, help="bodies per format")
    parser.add_argument("--clients", type=int, default=16, help="concurrent senders")
    parser.add_argument("--workers", type=int, default=1, help="receiver processes")
    parser.add_argument("--formats", default="elastic,jwe", help="comma-separated")
    args = parser.parse_args()
    figures = measure_receiver_throughput(
        bodies=args.bodies,
        clients=args.clients,
        workers=args.workers,
        formats=args.formats.split(","),
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
