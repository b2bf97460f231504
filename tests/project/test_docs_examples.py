"""Every code block in README.md and docs/*.md runs as written, in order, in a fresh directory.

The convention, for whoever writes the docs:

- ```python blocks run with this interpreter, in one namespace per document (so a block may use
  what an earlier block of the same document defined). ```bash (or ```sh) blocks run with
  `bash -euo pipefail`. Both run in the document's own empty temporary directory.
- The environment is an activated venv: `request-crypto` and `python` are this test's venv.
  So examples never install or activate anything; the one block that does (how to install) is
  marked not run, see below.
- ```text, ```console and ```json blocks are output samples or file contents: shown, not run.
  A fence with no info string is an error, so every block says which kind it is.
- `<!-- not run: REASON -->` on the line before a python/bash block skips it. Use it only for
  what cannot run here (the install itself, the Quickstart, which CI runs as the whole suite).
- A receiver: a block may start `request-crypto serve ... &` and wait for `/healthz`. Port
  8787, the default, is replaced by a free port in every block of the document, and whatever
  a document's shell blocks left running is stopped when the document ends.

docs/WIRE-FORMAT.md and docs/FILE-FORMAT.md are specifications, not tutorials: their
blocks are not run.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Specifications: exact bytes, checked by their own vector tests, not run as tutorials.
SPECIFICATIONS = {"WIRE-FORMAT.md", "FILE-FORMAT.md"}
DOCUMENTS = [
    ROOT / "README.md",
    *sorted(path for path in (ROOT / "docs").glob("*.md") if path.name not in SPECIFICATIONS),
]
RUN_AS = {"python": "python", "bash": "bash", "sh": "bash"}
SAMPLES = {"text", "console", "json"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`]*)$")
DOCUMENTED_PORT = "8787"
BLOCK_TIMEOUT = 120
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # 1-based line of the opening fence
    info: str
    code: str
    not_run: str | None  # the reason, when marked

    @property
    def where(self) -> str:
        name = self.document.relative_to(ROOT) if self.document.is_relative_to(ROOT) else None
        return f"{name or self.document.name}:{self.line}"


def blocks(document: Path) -> list[Block]:
    """The fenced blocks of a document, with their info string and any not-run mark."""
    found: list[Block] = []
    lines = document.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        mark = NOT_RUN.search(before)
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        assert end < len(lines), f"{document.name}:{index + 1}: unclosed code block"
        found.append(
            Block(
                document=document,
                line=index + 1,
                info=opening["info"].strip().split(" ")[0],
                code="\n".join(body) + "\n",
                not_run=mark["reason"] if mark else None,
            )
        )
        index = end + 1
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def activated_environment(directory: Path) -> dict[str, str]:
    """What `. .venv/bin/activate` gives: this venv's `request-crypto` and `python` first."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    environment["PATH"] = f"{VENV_BIN}{os.pathsep}{environment.get('PATH', '')}"
    environment["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    environment["TMPDIR"] = str(directory)
    return environment


class DocumentRun:
    """Runs one document's blocks in order, in `directory`; stops what its shells started."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = str(free_port())
        self.namespace: dict[str, object] = {"__name__": "__docs__"}
        self.groups: list[int] = []
        self.environment = activated_environment(directory)

    def run(self, block: Block) -> None:
        code = block.code.replace(DOCUMENTED_PORT, self.port)
        if RUN_AS[block.info] == "python":
            self._python(block, code)
        else:
            self._shell(block, code)

    def _python(self, block: Block, code: str) -> None:
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                exec(compile(code, block.where, "exec"), self.namespace)
        except BaseException as exc:
            raise AssertionError(
                f"{block.where}: the python block failed: {exc!r}\n{code}\n"
                f"--- its output:\n{output.getvalue()}"
            ) from exc

    def _shell(self, block: Block, code: str) -> None:
        script = self.directory / f".block-{block.line}.sh"
        log = self.directory / f".block-{block.line}.log"
        script.write_text(code)
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", str(script)],
                cwd=self.directory,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=out,  # a file, not a pipe: a server left running must not hold us
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.groups.append(process.pid)
            try:
                status = process.wait(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                status = None
        script.unlink()
        output = log.read_text(errors="replace")
        log.unlink()
        assert status == 0, (
            f"{block.where}: the bash block {'timed out' if status is None else f'exited {status}'}"
            f"\n{code}\n--- its output:\n{output}"
        )

    def stop_everything(self) -> None:
        """SIGTERM each shell's process group (a receiver stops gracefully), then SIGKILL."""
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for group in self.groups:
            while time.monotonic() < deadline and _alive(group):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    # A zombie leader still counts; reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(group, os.WNOHANG)
    return True


@contextlib.contextmanager
def document_run(directory: Path) -> Iterator[DocumentRun]:
    run = DocumentRun(directory)
    try:
        yield run
    finally:
        run.stop_everything()


def runnable(document: Path) -> list[Block]:
    return [b for b in blocks(document) if b.info in RUN_AS and b.not_run is None]


#: Documents with nothing to run: their blocks are output samples or minutes-long benchmarks.
WITHOUT_EXAMPLES = {"performance.md", "development.md"}


def test_only_the_expected_documents_have_nothing_to_run() -> None:
    assert {d.name for d in DOCUMENTS if not runnable(d)} == WITHOUT_EXAMPLES


@pytest.mark.parametrize(
    "document", [d for d in DOCUMENTS if d.name not in WITHOUT_EXAMPLES], ids=lambda d: d.name
)
def test_every_example_runs_in_order(
    document: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = runnable(document)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", activated_environment(tmp_path)["PATH"])
    with document_run(tmp_path) as run:
        for block in examples:
            run.run(block)
    # Nothing an example wrote may be committed by `git add .` in a clone where it is run.
    written = [
        path.relative_to(tmp_path).as_posix()
        for path in tmp_path.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    if written:
        ignored = subprocess.run(
            ["git", "check-ignore", "--no-index", "--stdin"],
            cwd=ROOT,
            input="\n".join(written),
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert sorted(set(written) - set(ignored)) == [], "add these to .gitignore"


def test_every_block_says_what_it_is() -> None:
    for document in DOCUMENTS:
        for block in blocks(document):
            assert block.info in RUN_AS or block.info in SAMPLES, (
                f"{block.where}: fence info {block.info!r}; use one of "
                f"{sorted(RUN_AS) + sorted(SAMPLES)}"
            )
            assert block.not_run is None or block.info in RUN_AS, block.where


def test_few_blocks_are_marked_not_run() -> None:
    marked = [b for document in DOCUMENTS for b in blocks(document) if b.not_run is not None]
    assert len(marked) <= 3, [b.where for b in marked]  # Quickstart, install, benchmark


def test_the_runner_fails_on_a_broken_example(tmp_path: Path) -> None:
    document = tmp_path / "broken.md"
    document.write_text(
        "```bash\nrequest-crypto keys init private_jwks.json --kid a\n```\n\n"
        "```python\nfrom request_crypto import RequestEncryptor\n\n"
        'RequestEncryptor.from_file("public_jwks.json")\n```\n'
    )
    shell, python = blocks(document)
    with document_run(tmp_path) as run:
        run.run(shell)
        with pytest.raises(AssertionError, match=r"broken\.md:5: the python block failed"):
            run.run(python)
        with pytest.raises(AssertionError, match="exited 1"):
            run.run(Block(document, 9, "bash", "request-crypto decrypt --jwks nope.json\n", None))


def test_the_readme_is_short_and_links_resolve() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" not in target:
                assert (document.parent / target).exists(), f"{document.name}: {target}"


def test_the_demo_prints_the_commands_it_runs(tmp_path: Path) -> None:
    """Pasting the demo's `$` lines into a shell does what the demo did."""
    environment = activated_environment(tmp_path)
    demo = subprocess.run(
        ["request-crypto", "demo"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=True,
    )
    commands = [line.strip()[2:] for line in demo.stdout.splitlines() if line.startswith("   $ ")]
    assert commands[0] == 'cd "$(mktemp -d)"'
    assert len(commands) == 14, demo.stdout
    replay = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join([*commands, "pwd"])],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    directory = Path(replay.stdout.splitlines()[-1])
    assert directory.parent == tmp_path
    names = {"private_jwks.json", "public_jwks.json", "payload.json", "body.txt", "jwe.txt"}
    assert names <= {path.name for path in directory.iterdir()}
    # The demo's payload, decrypted by the replayed commands, three times (as in the demo).
    payload = re.search(r"\$ echo '(\{.*\})' > payload\.json", demo.stdout)
    assert payload is not None
    assert replay.stdout.count('"cluster_uuid": "5b2de169-2785-441b"') == 3, replay.stdout
