"""scripts/fuzz.py cannot rot: its target runs here on a few hundred inputs, without atheris.

The 10-minute coverage-guided run (atheris) is a manual step; see scripts/fuzz.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from request_crypto.errors import (
    JSONBudgetError,
    MalformedBodyError,
    RequestCryptoError,
    UnsupportedAlgorithmError,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz.py"


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("request_crypto_fuzz", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def target(fuzz: ModuleType) -> Any:
    return fuzz.Target()


@pytest.fixture(scope="module")
def seeds(target: Any) -> list[bytes]:
    return target.seeds()  # type: ignore[no-any-return]


def test_seeds_are_valid_bodies_of_both_formats(
    fuzz: ModuleType, target: Any, seeds: list[bytes]
) -> None:
    kinds = set()
    for seed in seeds:
        body = fuzz.expand(seed)
        target.decryptor.decrypt(body)  # a valid body: must not raise
        kinds.add("jwe" if b"." in body else "elastic")
        kinds.add(seed[:1] if seed[:1] in (b"{", b"!") else b"raw")
    assert kinds == {"jwe", "elastic", b"{", b"!", b"raw"}


def test_hostile_seeds_are_refused_where_they_should_be(fuzz: ModuleType, target: Any) -> None:
    """Issue 11: a `jwe` body with zip and oversized envelopes are refused; a nested extra
    member (the JavaScript side ignores it) is not."""
    zipped, too_many, too_deep, nested_extra = (fuzz.expand(s) for s in target.hostile_seeds())
    with pytest.raises(UnsupportedAlgorithmError, match="'zip'"):
        target.decryptor.decrypt(zipped)
    for body in (too_many, too_deep):
        with pytest.raises(MalformedBodyError, match="not an elastic envelope"):
            target.decryptor.decrypt(body)
    assert target.decryptor.decrypt(nested_extra) == {"cluster_uuid": "abc", "count": 3}
    for seed in target.hostile_seeds():
        target(seed)  # refusals, not crashes


def test_budget_seeds_reach_the_tight_receivers_budget(fuzz: ModuleType, target: Any) -> None:
    for kid in sorted(target.kids):
        for payload in fuzz.BUDGET_PAYLOADS:
            body = target.decryptor.keys.encrypt_jwe(kid, payload)
            assert target.decryptor.decrypt(body) == json.loads(payload)
            with pytest.raises((JSONBudgetError, MalformedBodyError)):
                target.tight.decrypt(body)


def test_target_survives_random_and_mutated_inputs(
    fuzz: ModuleType, target: Any, seeds: list[bytes]
) -> None:
    rng = random.Random(5)
    inputs = list(seeds)
    inputs += [rng.randbytes(rng.randrange(0, 300)) for _ in range(100)]
    for _ in range(300):
        data = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            data = fuzz.mutate(data, seeds, rng)
        inputs.append(data)
    before = target.calls
    for data in inputs:
        target(data)  # raises on anything but a RequestCryptoError, or on a forgery
    assert target.calls - before == len(inputs) >= 400


def decrypt_with(target: Any, monkeypatch: pytest.MonkeyPatch, decrypt: Any) -> None:
    """Both of the target's decryptors (default and tight limits) decrypt with `decrypt`."""
    for decryptor in (target.decryptor, target.tight):
        monkeypatch.setattr(decryptor, "decrypt", decrypt)


def test_target_reports_a_crash(
    target: Any, seeds: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: Any) -> Any:
        raise KeyError("a bug")

    decrypt_with(target, monkeypatch, broken)
    with pytest.raises(KeyError):
        target(seeds[0])


def test_target_reports_a_forgery(
    target: Any, seeds: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    decrypt_with(target, monkeypatch, lambda body: {"forged": True})
    with pytest.raises(AssertionError, match="forgery"):
        target(seeds[0])


def test_target_accepts_library_errors(
    target: Any, seeds: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(body: Any) -> Any:
        raise RequestCryptoError("refused")

    decrypt_with(target, monkeypatch, refuse)
    target(seeds[0])


def run_fuzzer(fuzz_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """scripts/fuzz.py with `args`, its corpus and crashes under `fuzz_dir`; it must succeed."""
    environment = {**os.environ, "REQUEST_CRYPTO_FUZZ_DIR": str(fuzz_dir)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_command_line_runs_the_plain_fuzzer(tmp_path: Path) -> None:
    done = run_fuzzer(tmp_path, "--plain", "-runs=200", "-seed=1")
    assert "#200 DONE plain fuzzer" in done.stderr
    assert any((tmp_path / "corpus").iterdir())


# -- the sealed-file target ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed_target(fuzz: ModuleType) -> Any:
    return fuzz.SealedTarget()


def test_sealed_seeds_open_v1_and_v2(sealed_target: Any) -> None:
    seeds = sealed_target.seeds()
    versions = {seed.split(b"\n", 1)[0] for seed in seeds}
    assert {b"request-crypto-sealed/v1", b"request-crypto-sealed/v2"} <= versions
    before = sealed_target.outcomes["payload"]
    for seed in seeds:
        sealed_target(seed)
    # Every fresh seed opens (v2 ones with the stand-in KMS key, and RSA where it is one).
    assert sealed_target.outcomes["payload"] - before >= 16


def test_sealed_target_survives_mutated_inputs(fuzz: ModuleType, sealed_target: Any) -> None:
    rng = random.Random(7)
    seeds = sealed_target.seeds()
    for _ in range(300):
        data = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            data = fuzz.mutate_sealed(data, seeds, rng)
        sealed_target(data)  # raises on anything but a RequestCryptoError, or on a forgery


def test_sealed_target_reports_a_forgery(
    fuzz: ModuleType, sealed_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fuzz.SealedTarget, "_open", staticmethod(lambda data, keys: b"forged"))
    with pytest.raises(AssertionError, match="forgery"):
        sealed_target(sealed_target.seeds()[0])


def test_command_line_runs_the_sealed_target(tmp_path: Path) -> None:
    done = run_fuzzer(tmp_path, "--plain", "--target=sealed", "-runs=200", "-seed=1")
    assert "#200 DONE plain fuzzer" in done.stderr
    assert "open_sealed outcomes" in done.stderr


def test_a_crash_file_given_as_an_argument_is_replayed(
    fuzz: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As libFuzzer and atheris: a file argument runs once (not made a corpus directory), and
    replays the crash it holds."""
    crash = tmp_path / "crash-1"
    crash.write_bytes(b"request-crypto-sealed/v1\nsegment-size 1024\n")
    done = run_fuzzer(tmp_path / "fuzz", "--target=sealed", str(crash))
    assert f"Executed {crash}" in done.stderr
    assert crash.is_file() and not (tmp_path / "fuzz").exists()

    def crashing(data: bytes, keys: Any) -> bytes:
        raise KeyError("a bug")

    monkeypatch.setattr(fuzz.SealedTarget, "_open", staticmethod(crashing))
    with pytest.raises(KeyError, match="a bug"):
        fuzz.main(["fuzz.py", "--target=sealed", str(crash)])
