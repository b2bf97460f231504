"""`python -m benchmarks`: every path measured in one run, one table, the targets of issue 4.

One run measures, on this machine and side by side:

- the primitive bound: PBKDF2-HMAC-SHA512 x10,000 (hashlib and cryptography) and RSA-2048
  OAEP decrypt / encrypt, ops/s;
- signed `jwe` bodies (decrypt + verify) beside unsigned ones and RSA decrypt + verify;
- this library's `elastic` and `jwe` encrypt and decrypt for 1 KB, 100 KB and 5 MB JSON
  payloads of telemetry shape, and `decrypt_many` with one worker and one per core;
- the JavaScript original (`@elastic/request-crypto@2.0.3`, through interop/harness.mjs) on
  the same payloads, sequential and with Promise.all (skipped, with a note, without node);
- tracemalloc's peak of a 5 MB round trip beyond its input and result, per payload byte;
- the receiver over loopback HTTP under `wrk`, beside a bare Starlette app and its ceiling;
- `jwe` bodies through a SoftHSM2 token (PKCS#11) beside SoftHSM's own RSA-OAEP rate.

    python -m benchmarks                 # the full run (two to three minutes on 2 cores)
    python -m benchmarks --quick         # a smoke run, under a minute
    python -m benchmarks --json out.json

Adding a measurement: a `core.Section` subclass in its own module, listed in `sections()`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from . import batch, elastic, hsm, jwe, large, nested, receiver
from .core import (
    CORES,
    SIZES,
    Context,
    Section,
    Target,
    bound_ratios,
    fixture_jwks,
    render,
    run_rounds,
    serialized_size,
    telemetry,
)

#: Every section, in the order of the table.
SECTION_NAMES = (
    "primitives",
    "elastic",
    "jwe",
    "nested",
    "large",
    "batch",
    "memory",
    "receiver",
    "hsm",
)


def sections(only: set[str] | None = None) -> list[Section]:
    """The sections to run, by name (all of them by default); the bound is always there."""
    every: dict[str, Section] = {
        "primitives": elastic.Primitives(),
        "elastic": elastic.Elastic(),
        "jwe": jwe.Jwe(),
        "nested": nested.Nested(),
        "large": large.Large(),
        "batch": batch.Batch(),
        "memory": large.Memory(),
        "receiver": receiver.Receiver(),
        "hsm": hsm.Hsm(),
    }
    return [s for name, s in every.items() if only is None or name in only | {"primitives"}]


def backends() -> dict[str, str]:
    from request_crypto import _accel

    return dict(_accel.describe())


def json_document(
    ctx: Context, chosen: list[Section], targets: list[Target], **run: Any
) -> dict[str, Any]:
    """Every figure of the run, for --json."""
    return {
        **run,
        "sizes": ctx.sizes,
        "best": {k: max(v) for k, v in ctx.samples.items()},
        "median": {k: statistics.median(v) for k, v in ctx.samples.items()},
        "samples": ctx.samples,
        "slices": ctx.slices,
        "values": ctx.values,
        "bounds": {
            "elastic_decrypt": elastic.elastic_decrypt_bound(ctx.best),
            "elastic_encrypt": elastic.elastic_encrypt_bound(ctx.best),
        },
        "ratios_to_bound": {
            label: {"best_round": c.best, "paired_median": c.median, "pairs": c.pairs}
            for label, c in bound_ratios(ctx, chosen).items()
        },
        "targets": [
            {
                "name": t.name,
                "value": t.value,
                "threshold": t.threshold,
                "status": t.status,
                "detail": t.detail,
                **t.figures,
            }
            for t in targets
        ],
    }


def node_status(skip: bool) -> str | None:
    """None when the JavaScript original can run, else why it is skipped."""
    if skip:
        return "skipped (--no-node)"
    try:
        from interop import node

        node.ensure_installed()
    except Exception as exc:  # NodeUnavailable, or npm failing: measure without JS
        return f"skipped: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per case per round")
    parser.add_argument("--no-node", action="store_true", help="skip the JavaScript original")
    parser.add_argument(
        "--only", help=f"comma-separated sections to run, of: {', '.join(SECTION_NAMES)}"
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= set(SECTION_NAMES):
        parser.error(f"--only takes {', '.join(SECTION_NAMES)}")
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds or (0.2 if args.quick else 0.6)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    node_note = node_status(args.no_node)
    public_jwks = fixture_jwks("public")
    payloads = {name: telemetry(size) for name, size in SIZES.items()}
    ctx = Context(
        quick=args.quick,
        node_note=node_note,
        private_jwks=fixture_jwks("private"),
        public_jwks=public_jwks,
        kid=public_jwks["keys"][0]["kid"],
        payloads=payloads,
        sizes={name: serialized_size(p) for name, p in payloads.items()},
    )
    chosen = sections(only)
    for section in chosen:
        section.declare(ctx)
    log(
        f"measuring: {rounds} rounds x {seconds}s per case, {CORES} cores"
        + (f"; JavaScript {node_note}" if node_note else "")
    )
    run_rounds(ctx, rounds, seconds, log)
    for key, fn in ctx.once.items():
        ctx.values[key] = fn()

    targets = [t for section in chosen for t in section.targets(ctx)]
    machine = {
        "cores": CORES,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "node": ctx.values.get("js.node") or node_note,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        **backends(),
    }
    print(
        f"request_crypto bench: {CORES} cores, Python {machine['python']}, "
        f"node {machine['node']}, {rounds} rounds x {seconds}s, best round reported "
        "(same-group ratios also paired by slice)"
    )
    print(
        f"backends: json={machine['json']}, json reading={machine['json reading']}, "
        f"base64={machine['base64']}; payloads (serialized): "
        + ", ".join(f"{k}={v:,} B" for k, v in ctx.sizes.items())
    )
    if node_note:
        print(f"note: the JavaScript original was {node_note}")
    print(render(ctx, chosen, targets))
    elapsed = time.perf_counter() - started
    print(
        f"\n{sum(t.status == 'PASS' for t in targets)}/{len(targets)} targets pass; "
        f"{elapsed:.0f}s; load average after: {machine['load_average']}"
    )
    if args.json:
        document = json_document(
            ctx, chosen, targets, machine=machine, rounds=rounds, seconds=seconds
        )
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
