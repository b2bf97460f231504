"""The package's shape (issue 12): public names, layers, private names, docstrings, file sizes."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import request_crypto

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "request_crypto"

PUBLIC_NAMES = [
    "DEFAULT_LIMITS",
    "DecryptedRequest",
    "DirectKeySet",
    "ElasticBody",
    "FileSealer",
    "Format",
    "JWKDecryptResult",
    "JWKManager",
    "JWKMetadata",
    "JWKSInput",
    "JWKSManager",
    "KEY_LENGTH_IN_BYTES",
    "KeySetFile",
    "KeySource",
    "Limits",
    "PassphraseCipher",
    "RemoteJWKS",
    "RequestDecryptor",
    "RequestEncryptor",
    "SealedInfo",
    "SealedReader",
    "Signer",
    "SignerInfo",
    "SigningKeySet",
    "Verifier",
    "__version__",
    "create_jwk_manager",
    "create_request_decryptor",
    "create_request_encryptor",
    "detect_format",
    "generate_passphrase",
    "inspect_sealed",
    "open_sealed",
    "pack_body",
    "seal",
    "unpack_body",
]

MAX_LINES = 600


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split("."))
    return (ROOT / relative.with_suffix(".py")).exists() or (ROOT / relative).is_dir()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_public_names_are_pinned() -> None:
    assert sorted(request_crypto.__all__) == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(request_crypto, name) is not None


def test_init_only_reexports() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Assign"}, kinds  # docstring, imports, __all__


def test_core_imports_no_cli_server_or_file_locking() -> None:
    """A sender imports and runs where there is no fcntl (Windows), and loads no CLI/server."""
    script = """
import sys
sys.modules["fcntl"] = None  # as on Windows: importing it fails
import request_crypto
from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor
keys = JWKManager()
keys.add_key("k")
body = RequestEncryptor(keys.get_private_jwks(), format="jwe").encrypt("k", [1])
assert RequestDecryptor(keys).decrypt(body) == [1]
print(",".join(sorted(m for m in ("typer", "click", "starlette", "uvicorn", "httpx", "anyio")
                      if m in sys.modules)))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_fcntl_is_imported_only_where_files_are_locked() -> None:
    importers = set()
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "fcntl" for a in node.names):
                importers.add(name)
    assert importers == {"request_crypto.keyfile", "request_crypto.receiver.sinks"}
    # keyfile.py is imported by the core (reading key files): there it is imported lazily.
    tree = ast.parse((PACKAGE / "keyfile.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, ast.Import)]
    assert all(alias.name != "fcntl" for node in top_level for alias in node.names)


def _private_uses(name: str, path: Path) -> Iterator[str]:
    """`from .x import _y`, `from request_crypto.x import _y`, and `x._y` on a package module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules: set[str] = set()  # local names bound to modules of the package
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source.split(".")[0] != "request_crypto":
                continue
            for alias in node.names:
                if _is_module(f"{source}.{alias.name}"):
                    modules.add(alias.asname or alias.name)
                elif _private(alias.name):
                    yield f"{name}: from {source} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("request_crypto") and alias.asname:
                    modules.add(alias.asname)
    own = _private_names_defined(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in modules:
            yield f"{name}: {node.value.id}.{node.attr}"
        elif node.attr not in own and node.attr not in NAMEDTUPLE_API:
            # `Other(...)._method`: a private name of an object this module did not define.
            yield f"{name}: {ast.unparse(node)}"


#: Public API that happens to start with an underscore.
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}


def _private_names_defined(tree: ast.Module) -> set[str]:
    """Private functions, methods and attributes this module defines (its own to use)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return {n for n in names if _private(n)}


def test_no_module_uses_another_modules_private_names() -> None:
    found = [use for name, path in _modules() for use in _private_uses(name, path)]
    assert found == []


def test_the_private_name_check_sees_each_shape(tmp_path: Path) -> None:
    shapes = (
        "from .jwks import _Key\n"
        "from request_crypto._jose import _inflate\n"
        "from .. import _jose\n"
        "_jose._HEADER_CACHE.clear()\n"
        "from .._jose import parse_compact\n"  # a private module's public name: allowed
        "PassphraseCipher(b'k')._seal(b'')\n"
        "def _mine(): pass\n"
        "probe._mine()\n"  # this module's own private name: allowed
    )
    module = tmp_path / "probe.py"
    module.write_text(shapes)
    found = list(_private_uses("request_crypto.keys.probe", module))
    assert found == [
        "request_crypto.keys.probe: from request_crypto.keys.jwks import _Key",
        "request_crypto.keys.probe: from request_crypto._jose import _inflate",
        "request_crypto.keys.probe: PassphraseCipher(b'k')._seal",
        "request_crypto.keys.probe: _jose._HEADER_CACHE",
    ]


def _public_modules() -> Iterator[str]:
    yield "request_crypto"
    for info in pkgutil.walk_packages(request_crypto.__path__, "request_crypto."):
        if not any(_private(part) for part in info.name.split(".")):
            yield info.name


def _undocumented(name: str) -> Iterator[str]:
    module = importlib.import_module(name)
    for export in getattr(module, "__all__", []):
        obj = getattr(module, export)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)) or obj.__module__ != name:
            continue
        if not obj.__doc__:
            yield f"{name}.{export}"
        if not inspect.isclass(obj):
            continue
        for attr, value in vars(obj).items():
            if _private(attr) or attr.startswith("__"):
                continue
            if isinstance(value, property):
                documented = bool(value.__doc__)
            elif callable(value) or isinstance(value, (classmethod, staticmethod)):
                documented = bool(inspect.getdoc(getattr(obj, attr)))
            else:
                continue
            if not documented:
                yield f"{name}.{export}.{attr}"


@pytest.mark.parametrize("name", list(_public_modules()))
def test_every_public_class_and_method_has_a_docstring(name: str) -> None:
    assert list(_undocumented(name)) == []


def test_no_source_or_test_file_is_over_600_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for folder in ("request_crypto", "benchmarks", "scripts", "tests")
        for path in (ROOT / folder).rglob("*.py")
    }
    assert "request_crypto/request.py" in sizes
    assert "tests/conftest.py" in sizes
    over = {path: lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert over == {}, "split these files"


def test_lazy_exports_match_the_type_stub() -> None:
    """`_exports.HOMES` (what the package imports on first use) and `__init__.pyi` (what type
    checkers see) name the same objects from the same modules, and `__all__` lists them."""
    from request_crypto._exports import HOMES

    stub = ast.parse((PACKAGE / "__init__.pyi").read_text())
    stubbed = {
        alias.asname or alias.name: (node.module or "").lstrip(".")
        for node in stub.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert stubbed == HOMES
    assert set(request_crypto.__all__) == {*HOMES, "__version__"}


def fresh_python(script: str) -> list[str]:
    """The lines `script` prints in a new interpreter (which modules are loaded is the point)."""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")


def test_the_keys_package_names_load_on_first_use() -> None:
    """`request_crypto.keys` imports a name's module when it is first used: `seal` needs only
    `keys.jwks`, not the signing, remote and merged sources (nor jwcrypto)."""
    script = (
        "import sys\n"
        "from request_crypto.keys import JWKManager\n"
        "others = ('request_crypto.keys.signing', 'request_crypto.keys.remote', 'jwcrypto')\n"
        "print(sorted(m for m in others if m in sys.modules))\n"
        "import request_crypto.keys as keys\n"
        "print(all(getattr(keys, name) is not None for name in keys.__all__))\n"
        "print(set(keys.__all__) <= set(dir(keys)))\n"
    )
    assert fresh_python(script)[:3] == ["[]", "True", "True"]


def test_importing_the_package_loads_no_request_machinery() -> None:
    """`import request_crypto` (and so every `request-crypto` command) starts without jwcrypto,
    x509 or asyncio until a name that needs them is used."""
    script = (
        "import sys, request_crypto\n"
        "heavy = ('jwcrypto', 'cryptography.x509', 'asyncio')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "request_crypto.RequestEncryptor\n"
        "print('request_crypto.request' in sys.modules)\n"
    )
    assert fresh_python(script)[:2] == ["[]", "True"]
