"""Sealed files against age: `request-crypto seal`/`open` vs `age` encrypt/decrypt, same run.

Command against command, start-up included: each round runs every pair back to back on the
same file (interleaved, who goes first alternating, so load from elsewhere hits both alike),
and the table shows the median (and best) MiB/s, their ratio and each command's peak RSS
(wait4 of that child). Every command starts from the same page-cache state (`same_start`):
without that, file outputs varied by seconds, the kernel reclaiming the previous command's
gigabyte of page cache during whichever tool wrote next (sys time 0.3-2.6 s for the same
`dd`). Then the
constant-memory check: a stream of --pipe-gib GiB piped through `seal | open`, each
process's peak RSS shown.

    .venv/bin/python scripts/bench_sealed.py --size-mib 1024 --rounds 5 --pipe-gib 1 4

`--s3-mib N --s3-bucket B` adds sealed files to and from S3 (boto3's usual settings, e.g.
AWS_ENDPOINT_URL_S3 for moto's server): seal file -> s3, open s3 -> /dev/null, open s3 -> s3,
each command's MiB/s (start-up included) and peak RSS.

Needs `age` and `age-keygen` on PATH (Debian: apt-get install age). Files go to --dir
(default: a temporary directory under /tmp) and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RC = str(BIN / "request-crypto")
MIB = 1024 * 1024


def run(
    argv: list[str], *, stdin: int | None = None, stdout: int | None = None
) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one command, which must succeed."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdin=stdin, stdout=stdout)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(argv)}")
    return elapsed, usage.ru_maxrss / 1024


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def compile_package() -> str:
    """Compile request_crypto's modules to bytecode first, as `pip install` of the wheel does.

    An editable checkout run under PYTHONDONTWRITEBYTECODE=1 (this machine's environment)
    compiles every module from source on every command: measured ~26 ms of a 99 ms `seal`
    start-up that no installed copy pays. Returns a line for the report.
    """
    import compileall

    import request_crypto

    directory = Path(request_crypto.__file__).parent
    compileall.compile_dir(directory, quiet=1)
    return f"bytecode of {directory} compiled first, as a wheel install has it"


def same_start(inputs: list[Path]) -> str:
    """Give every command the same page-cache state: no dirty pages, the clean page cache
    dropped (root on Linux) and the command's input read back in, so a run neither pays for
    reclaiming the previous command's gigabyte nor reads its input from disk. Returns how."""
    os.sync()
    how = "sync only (dropping the page cache needs root on Linux)"
    try:
        DROP_CACHES.write_text("1")
        how = "sync, page cache dropped, input read back in"
    except OSError:
        pass
    for path in inputs:
        with path.open("rb") as source:
            while source.read(8 * MIB):
                pass
    return how


def make_input(path: Path, size: int) -> None:
    chunk = os.urandom(MIB)
    with path.open("wb") as handle:
        for _ in range(size // MIB):
            handle.write(chunk)
        handle.write(chunk[: size % MIB])


def setup(work: Path) -> dict[str, str]:
    subprocess.run(
        [RC, "keys", "init", str(work / "private.json"), "--kid", "bench", "--alg", "RSA-OAEP-256"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [RC, "keys", "public", str(work / "private.json"), "-o", str(work / "public.json")],
        check=True,
        capture_output=True,
    )
    subprocess.run(["age-keygen", "-o", str(work / "age.key")], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(work / "age.key")], check=True, capture_output=True, text=True
    ).stdout.strip()
    return {
        "private": str(work / "private.json"),
        "public": str(work / "public.json"),
        "age_key": str(work / "age.key"),
        "age_recipient": recipient,
    }


def pairs(work: Path, keys: dict[str, str], plain: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (our command, age's command)."""
    sealed, aged = str(work / "in.sealed"), str(work / "in.age")
    out = str(work / "out.bin")
    return {
        "encrypt -> /dev/null": (
            [RC, "seal", "--jwks", keys["public"], str(plain), "-o", os.devnull],
            ["age", "-r", keys["age_recipient"], "-o", os.devnull, str(plain)],
        ),
        "decrypt -> /dev/null": (
            [RC, "open", "--jwks", keys["private"], sealed, "-o", os.devnull],
            ["age", "-d", "-i", keys["age_key"], "-o", os.devnull, aged],
        ),
        "encrypt file -> file": (
            [RC, "seal", "--jwks", keys["public"], str(plain), "-o", out],
            ["age", "-r", keys["age_recipient"], "-o", out, str(plain)],
        ),
        "decrypt file -> file": (
            [RC, "open", "--jwks", keys["private"], sealed, "-o", out],
            ["age", "-d", "-i", keys["age_key"], "-o", out, aged],
        ),
    }


def compare(work: Path, keys: dict[str, str], size: int, rounds: int) -> None:
    plain = work / "in.bin"
    make_input(plain, size)
    run([RC, "seal", "--jwks", keys["public"], str(plain), "-o", str(work / "in.sealed")])
    run(["age", "-r", keys["age_recipient"], "-o", str(work / "in.age"), str(plain)])
    table = pairs(work, keys, plain)
    start_state = ""
    results: dict[str, tuple[list[float], list[float], list[float], list[float]]] = {
        name: ([], [], [], []) for name in table
    }
    for round_number in range(rounds):
        for name, (ours, theirs) in table.items():
            # Each run starts with no dirty pages to write back (file outputs would otherwise
            # pay for the previous command's gigabyte) and no output file: replacing a 1 GiB
            # file costs ~0.5 s on ext4 (freeing it, and auto_da_alloc forcing the new file's
            # block allocation on rename), which measures the file system, not the tool.
            # Who goes first alternates between rounds.
            measured = {}
            order = [("ours", ours), ("age", theirs)]
            for label, argv in order if round_number % 2 == 0 else reversed(order):
                (work / "out.bin").unlink(missing_ok=True)
                inputs = [Path(arg) for arg in argv if arg.startswith(str(work) + "/in.")]
                start_state = same_start(inputs)
                measured[label] = run(argv)
            row = results[name]
            row[0].append(measured["ours"][0])
            row[1].append(measured["age"][0])
            row[2].append(measured["ours"][1])
            row[3].append(measured["age"][1])
    mib = size / MIB
    print(f"\n{mib:.0f} MiB, {rounds} interleaved rounds, start-up included; median (best)")
    print(f"before each command: {start_state}")
    print("| operation | request-crypto MiB/s | age MiB/s | ratio | request-crypto RSS | age RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (ours, theirs, ours_rss, age_rss) in results.items():
        ours_rate, age_rate = mib / statistics.median(ours), mib / statistics.median(theirs)
        ours_best, age_best = mib / min(ours), mib / min(theirs)
        print(
            f"| {name} | {ours_rate:,.0f} ({ours_best:,.0f}) | {age_rate:,.0f} ({age_best:,.0f}) "
            f"| {ours_rate / age_rate:.2f}x ({ours_best / age_best:.2f}x) "
            f"| {max(ours_rss):.0f} MiB | {max(age_rss):.0f} MiB |"
        )
    for name in ("in.bin", "in.sealed", "in.age", "out.bin"):
        (work / name).unlink(missing_ok=True)


def pipe_memory(keys: dict[str, str], gib: int) -> None:
    """`head -c N /dev/zero | seal | open > /dev/null`: peak RSS of seal and of open."""
    size = gib * 1024 * MIB
    with open(os.devnull, "wb") as sink:
        start = time.perf_counter()
        source = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        sealer = subprocess.Popen(
            [RC, "seal", "--jwks", keys["public"]], stdin=source.stdout, stdout=subprocess.PIPE
        )
        opener = subprocess.Popen(
            [RC, "open", "--jwks", keys["private"]], stdin=sealer.stdout, stdout=sink
        )
        assert source.stdout is not None and sealer.stdout is not None
        source.stdout.close()
        sealer.stdout.close()
        usage = {}
        for name, process in (("seal", sealer), ("open", opener)):
            _, status, rusage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode:
                raise SystemExit(f"{name} failed in the pipe ({process.returncode})")
            usage[name] = rusage.ru_maxrss / 1024
        source.wait()
        elapsed = time.perf_counter() - start
    print(
        f"| {gib} GiB through `seal | open` (pipes) | seal {usage['seal']:.0f} MiB "
        f"| open {usage['open']:.0f} MiB | {size / MIB / elapsed:,.0f} MiB/s |"
    )


def s3_rounds(work: Path, keys: dict[str, str], size: int, bucket: str) -> None:
    """Sealed files to and from S3: MiB/s and peak RSS of each command."""
    plain = work / "s3.bin"
    make_input(plain, size)
    sealed, copy = f"s3://{bucket}/bench.sealed", f"s3://{bucket}/bench.copy"
    commands = {
        "seal file -> s3": [RC, "seal", "--jwks", keys["public"], str(plain), "-o", sealed],
        "open s3 -> /dev/null": [RC, "open", "--jwks", keys["private"], sealed, "-o", os.devnull],
        "open s3 -> s3": [RC, "open", "--jwks", keys["private"], sealed, "-o", copy],
    }
    print(f"\n{size / MIB:.0f} MiB through S3 ({os.environ.get('AWS_ENDPOINT_URL_S3', 'AWS')})")
    print("| operation | MiB/s | peak RSS |")
    print("| --- | ---: | ---: |")
    for name, argv in commands.items():
        seconds, rss = run(argv)
        print(f"| {name} | {size / MIB / seconds:,.0f} | {rss:.0f} MiB |")
    plain.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipe-gib", type=int, nargs="*", default=[1])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--s3-mib", type=int, default=0)
    parser.add_argument("--s3-bucket", default="")
    args = parser.parse_args()
    if args.s3_mib and not args.s3_bucket:
        raise SystemExit("--s3-mib needs --s3-bucket (an existing bucket)")
    if not shutil.which("age"):
        raise SystemExit("age is not installed (Debian: apt-get install age)")
    print(compile_package())
    work = Path(tempfile.mkdtemp(prefix="bench-sealed-", dir=args.dir))
    try:
        keys = setup(work)
        if args.size_mib:
            compare(work, keys, args.size_mib * MIB, args.rounds)
        if args.pipe_gib:
            print("\n| stream | peak RSS | peak RSS | throughput |")
            print("| --- | ---: | ---: | ---: |")
            for gib in args.pipe_gib:
                pipe_memory(keys, gib)
        if args.s3_mib:
            s3_rounds(work, keys, args.s3_mib * MIB, args.s3_bucket)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
