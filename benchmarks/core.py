"""The shared method: payloads, interleaved rounds, paired slices, ratios, targets, the table.

Each figure in the table is the best of several short rounds, and each round runs the
JavaScript side and this side back to back (alternating which goes first), so noise reaches
both alike. Inside a round the Python cases of a group take turns in slices (`SLICE_SECONDS`),
and every slice's rates are kept. Two best rounds are maxima caught at different moments, so on
a noisy machine their ratio swings by several percent from run to run while the code stays the
same. A ratio whose both sides are Python cases of one group (a case against its primitive
bound, jwe against elastic, two worker counts) is therefore judged by the median over all
slices of the ratio within a slice, where both sides ran back to back: drift in the machine's
load cancels, and the median shrugs off bursts that hit one side only.

Targets against the JavaScript original stay best round against best round; with a `ceiling`
they also print what this run's primitives allow, so a FAIL the primitives force is told apart.
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KB = 1000
MB = 1000 * 1000
SIZES = {"1KB": 1 * KB, "100KB": 100 * KB, "5MB": 5 * MB}
CORES = os.cpu_count() or 1
#: Promise.all width for the JavaScript original: what a Node service does with a burst. The
#: libuv pool (4 threads) runs PBKDF2; RSA runs on the main thread. 16 measured the best here.
JS_CONCURRENCY = {"1KB": 16, "100KB": 16, "5MB": 4}


# --- payloads and keys -----------------------------------------------------------------------


def telemetry(size: int) -> dict[str, Any]:
    """A deterministic JSON document of Kibana-telemetry shape, about `size` bytes serialized:
    a cluster header, then usage records of nested objects, strings, ints, floats, booleans,
    nulls and short arrays."""
    rng = random.Random(size)
    doc: dict[str, Any] = {
        "cluster_uuid": f"{rng.getrandbits(128):032x}",
        "cluster_name": "prod-eu-west-1",
        "version": "8.15.2",
        "timestamp": "2026-11-23T07:00:00.000Z",
        "license": {"type": "platinum", "status": "active", "expiry_date_in_millis": 1893456000000},
        "stats": {
            "nodes": {"count": {"total": 12, "data": 9, "master": 3}},
            "jvm": {"max_uptime_in_millis": 86400000, "heap_used_in_bytes": 5368709120},
        },
        "usage": [],
    }
    usage: list[Any] = doc["usage"]
    length = len(json.dumps(doc, separators=(",", ":")))
    index = 0
    while length < size:
        record = {
            "id": index,
            "name": f"dashboard-{index}-{rng.choice(['ops', 'sec', 'apm', 'logs', 'infra'])}",
            "enabled": rng.random() < 0.8,
            "count": rng.randrange(10**6),
            "ratio": round(rng.random(), 6),
            "tags": [rng.choice(["prod", "staging", "dev", "eu", "us", "k8s"]) for _ in range(3)],
            "metrics": {
                "p50_ms": round(rng.uniform(1, 50), 3),
                "p99_ms": round(rng.uniform(50, 900), 3),
                "errors": rng.randrange(100),
                "last_seen": f"2026-11-{rng.randrange(1, 23):02d}T{rng.randrange(24):02d}:00:00Z",
            },
            "owner": None if rng.random() < 0.3 else f"user{rng.randrange(500)}@example.com",
        }
        usage.append(record)
        index += 1
        length += len(json.dumps(record, separators=(",", ":"))) + (len(usage) > 1)
        if size < 2 * KB and length > size:
            break
    return doc


def serialized_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def fixture_jwks(name: str) -> dict[str, Any]:
    """fixtures/{name}_jwks.json: the key sets every measurement (and the JS side) uses."""
    document: dict[str, Any] = json.loads((ROOT / "fixtures" / f"{name}_jwks.json").read_text())
    return document


# --- measurement machinery -------------------------------------------------------------------


def loop_rate(fn: Callable[[], object], seconds: float, per_call: int = 1) -> float:
    """Call `fn` until `seconds` have passed (at least once); return calls * per_call / s."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done * per_call / (now - start)


def cpu_rate(fn: Callable[[], object], seconds: float) -> float:
    """Call `fn` for about `seconds` of wall time; return calls per second of this thread's CPU."""
    done = 0
    cpu_start, deadline = time.thread_time(), time.perf_counter() + seconds
    while True:
        fn()
        done += 1
        if time.perf_counter() >= deadline:
            return done / max(time.thread_time() - cpu_start, 1e-9)


@dataclass
class JsCase:
    name: str
    op: str
    payload: str | None = None
    concurrency: int = 1


@dataclass
class Group:
    """Cases measured back to back within one round: the Python ones and one node call."""

    name: str
    python: dict[str, Callable[[float], float]] = field(default_factory=dict)
    js: list[JsCase] = field(default_factory=list)
    js_payloads: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a section declares its cases into, and where every figure ends up."""

    quick: bool
    node_note: str | None
    private_jwks: dict[str, Any]
    public_jwks: dict[str, Any]
    kid: str
    payloads: dict[str, Any]
    sizes: dict[str, int]
    groups: dict[str, Group] = field(default_factory=dict)
    once: dict[str, Callable[[], Any]] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    #: Per group, every slice of every round: the rate of each of its Python cases.
    slices: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> bool:
        return self.node_note is None

    def group(self, name: str) -> Group:
        return self.groups.setdefault(name, Group(name))

    def py(self, group: str, key: str, run: Callable[[float], float]) -> None:
        """A Python case: `run(seconds)` works for about that long and returns ops/s."""
        self.group(group).python[key] = run

    def py_loop(self, group: str, key: str, fn: Callable[[], object], per_call: int = 1) -> None:
        self.py(group, key, lambda seconds: loop_rate(fn, seconds, per_call))

    def js(self, group: str, case: JsCase) -> None:
        if not self.node:
            return
        g = self.group(group)
        g.js.append(case)
        if case.payload is not None:
            g.js_payloads[case.payload] = self.payloads[case.payload]

    def add_once(self, key: str, fn: Callable[[], Any]) -> None:
        """A figure measured once, outside the rounds (memory, say)."""
        self.once[key] = fn

    def best(self, key: str) -> float | None:
        """The best round: on a shared machine, the closest to what the code itself costs."""
        samples = self.samples.get(key)
        return max(samples) if samples else None


def run_js(ctx: Context, group: Group, seconds: float) -> dict[str, float]:
    from interop import node

    answer = node.run(
        "bench",
        private_jwks=ctx.private_jwks,
        public_jwks=ctx.public_jwks,
        kid=ctx.kid,
        payloads=group.js_payloads,
        cases=[
            {
                "name": c.name,
                "op": c.op,
                "payload": c.payload,
                "concurrency": c.concurrency,
                "seconds": seconds,
            }
            for c in group.js
        ],
    )
    ctx.values.setdefault("js.node", answer["node"])
    ctx.values.setdefault("js.uv_threadpool_size", answer["uv_threadpool_size"])
    for name, size in answer["body_bytes"].items():
        ctx.values[f"js.body_bytes.{name}"] = size
    return dict(answer["results"])


#: How long a slice of a group's Python cases lasts, at the least. More slices give more pairs
#: to `compare`, not a longer run (each case still gets `seconds` a round), but a slice must hold
#: several operations of the group's slowest case, or a slice's rate is mostly the overshoot of
#: its last call: 1 KB cases take ~5 ms, 100 KB ~10 ms, 5 MB ~100 ms, and a 32-body decrypt_many
#: call on one worker ~150 ms (so a batch slice is one call, i.e. 32 decrypts).
SLICE_SECONDS = {"1KB": 0.075, "100KB": 0.075, "5MB": 0.2, "batch": 0.12}


def slice_count(group: str, seconds: float) -> int:
    return max(1, round(seconds / SLICE_SECONDS.get(group, 0.1)))


def run_python(ctx: Context, group: Group, seconds: float) -> dict[str, float]:
    """Run the group's Python cases in turns, slice after slice, `seconds` each in all.

    Turns spread a burst of load from elsewhere on the machine over all the cases alike, and
    each slice's rates go to `ctx.slices` for `compare`. The round's figure is their mean."""
    count = slice_count(group.name, seconds)
    turns = [{key: run(seconds / count) for key, run in group.python.items()} for _ in range(count)]
    ctx.slices.setdefault(group.name, []).extend(turns)
    return {key: statistics.fmean(turn[key] for turn in turns) for key in group.python}


def run_rounds(ctx: Context, rounds: int, seconds: float, log: Callable[[str], None]) -> None:
    for index in range(rounds):
        for group in ctx.groups.values():
            steps: list[Callable[[], dict[str, float]]] = []
            if group.js:
                steps.append(partial(run_js, ctx, group, seconds))
            if group.python:
                steps.append(partial(run_python, ctx, group, seconds))
            if index % 2:
                steps.reverse()  # alternate who goes first, so drifts in load cancel out
            for step in steps:
                gc.collect()
                for key, value in step().items():
                    ctx.samples.setdefault(key, []).append(value)
        log(f"  round {index + 1}/{rounds} done")


# --- ratios and targets ----------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


#: A case's rate by its key: `Context.best` (its best round), or one slice's `dict.get`.
Rate = Callable[[str], float | None]
#: One side of a ratio: a case's key, or a figure computed from rates (a bound).
Figure = str | Callable[[Rate], float | None]


def resolve(figure: Figure, rate: Rate) -> float | None:
    return rate(figure) if isinstance(figure, str) else figure(rate)


def best_ratio(ctx: Context, measured: Figure, reference: Figure) -> float | None:
    return ratio(resolve(measured, ctx.best), resolve(reference, ctx.best))


def serial_bound(*rates: float | None) -> float | None:
    """The rate of doing each step once in a row: 1 / (sum of the steps' times)."""
    if not all(rates):
        return None
    return 1 / sum(1 / r for r in rates if r)


@dataclass
class Comparison:
    """`measured / reference`, best round against best round and slice by slice."""

    best: float | None
    median: float | None  # of the ratios within one slice
    pairs: int  # slices that held both sides

    @property
    def value(self) -> float | None:
        """What a target is judged by: the paired median when there are pairs."""
        return self.median if self.pairs else self.best


def compare(ctx: Context, measured: Figure, reference: Figure) -> Comparison:
    """Both ratios; the paired one only when both sides are Python cases of one group.

    Within a slice the two sides ran back to back, so the ratio there sees the same machine;
    the median over slices drops the bursts that hit one side only. Sides in different groups
    (or run by node) never share a slice, and get no pairs."""

    def within(turn: dict[str, float]) -> float | None:
        return ratio(resolve(measured, turn.get), resolve(reference, turn.get))

    turns = [turn for group in ctx.slices.values() for turn in group]
    paired = [r for r in map(within, turns) if r is not None]
    return Comparison(
        best_ratio(ctx, measured, reference),
        statistics.median(paired) if paired else None,
        len(paired),
    )


@dataclass
class Target:
    name: str
    value: float | None
    threshold: float
    unit: str = "x"
    notes: list[str] = field(default_factory=list)
    #: Figures behind `value` and the notes, for --json.
    figures: dict[str, float | int | None] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.value is None:
            return "SKIP"
        return "PASS" if self.value >= self.threshold else "FAIL"

    @property
    def detail(self) -> str:
        return " ".join(f"({note})" for note in self.notes)


@dataclass(frozen=True)
class RatioTarget:
    """One of the issue's ratio targets: `measured / reference >= threshold`.

    Those whose two sides are Python cases of one group are judged by the paired median
    (`compare`), the others by best rounds."""

    label: str
    measured: Figure
    reference: Figure
    threshold: float
    #: For a target against the JavaScript original: the most `measured` could be if this code
    #: cost nothing beyond PBKDF2 and RSA, so that a FAIL the primitives force is told apart.
    ceiling: Figure | None = None


def judge(ctx: Context, spec: RatioTarget) -> Target:
    comparison = compare(ctx, spec.measured, spec.reference)
    result = Target(spec.label, comparison.value, spec.threshold)
    result.figures["best_round"] = comparison.best
    if comparison.pairs:
        result.figures.update(paired_median=comparison.median, pairs=comparison.pairs)
        result.notes.append(
            f"median of {comparison.pairs} paired slices; best rounds {fmt(comparison.best, 2)}x"
        )
    if spec.ceiling is not None:
        ceiling = best_ratio(ctx, spec.ceiling, spec.reference)
        result.figures["ceiling"] = ceiling
        if ceiling is not None:
            result.notes.append(f"bound allows <= {ceiling:.2f}x")
            if result.status == "FAIL" and ceiling < spec.threshold:
                result.notes.append(
                    "out of reach: the threshold is above what PBKDF2+RSA allow against this JS run"
                )
    return result


# --- sections --------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    this: float | None = None
    js_seq: float | None = None
    js_all: float | None = None
    unit: str = "ops/s"
    note: str = ""


#: A line of the "Ratios to the bound" block: (label, measured, its bound).
BoundRatio = tuple[str, Figure, Figure]


class Section:
    """One measured path: its cases (`declare`), its rows, its targets and bound ratios.

    Python cases are callables `run(seconds) -> ops/s` (`ctx.py`, `ctx.py_loop`), scheduled in
    the interleaved rounds; `ctx.once` is for one-shot figures measured after the rounds."""

    title = ""
    ratio_targets: Sequence[RatioTarget] = ()
    bound_ratios: Sequence[BoundRatio] = ()

    def declare(self, ctx: Context) -> None:
        raise NotImplementedError

    def rows(self, ctx: Context) -> list[Row]:
        raise NotImplementedError

    def targets(self, ctx: Context) -> list[Target]:
        return [judge(ctx, spec) for spec in self.ratio_targets]


def bound_ratios(ctx: Context, sections: Sequence[Section]) -> dict[str, Comparison]:
    return {
        label: compare(ctx, measured, bound)
        for section in sections
        for label, measured, bound in section.bound_ratios
    }


# --- output ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render_row(row: Row, sizes: dict[str, int]) -> str:
    unit = "" if row.unit == "ops/s" else f"  ({row.unit})"
    mbs = ""
    for size in sizes:
        if row.label.endswith(f" {size}") and row.this is not None and size != "1KB":
            mbs = f"  = {row.this * sizes[size] / MB:.1f} MB/s"
            if row.js_seq:
                mbs += f" vs JS {row.js_seq * sizes[size] / MB:.1f}"
    return (
        f"  {row.label:48} {fmt(row.this, 2 if row.unit != 'ops/s' else 1):>9}"
        f" {fmt(row.js_seq):>9} {fmt(ratio(row.this, row.js_seq), 2):>8}"
        f" {fmt(row.js_all):>9} {fmt(ratio(row.this, row.js_all), 2):>8}{unit}{mbs}"
        + (f"  [{row.note}]" if row.note else "")
    )


def render(ctx: Context, sections: Sequence[Section], targets: list[Target]) -> str:
    out: list[str] = []
    for section in sections:
        rows = section.rows(ctx)
        if not rows:
            continue
        out.append(f"\n{section.title}")
        out.append(
            f"  {'':48} {'this':>9} {'JS seq':>9} {'this/JS':>8} {'JS all':>9} {'this/all':>8}"
        )
        out.extend(render_row(row, ctx.sizes) for row in rows)
    out.append(f"\n{'Ratios to the bound':60} {'best rounds':>12} {'paired median':>15}")
    for label, c in bound_ratios(ctx, sections).items():
        pairs = f"of {c.pairs} slices" if c.pairs else "sides in different groups"
        out.append(f"  {label:58} {percent(c.best):>12} {percent(c.median):>15}  ({pairs})")
    out.append("\nTargets (issue 13)")
    for t in targets:
        # A third digit when two would show a FAIL as "1.80x need >= 1.80".
        digits = 3 if t.value is not None and round(t.value, 2) == t.threshold else 2
        value = "-" if t.value is None else f"{t.value:.{digits}f}{t.unit}"
        detail = f"  {t.detail}" if t.detail else ""
        out.append(f"  {t.status:4}  {t.name:52} {value:>8}  need >= {t.threshold:.2f}{detail}")
    return "\n".join(out)
