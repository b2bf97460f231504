"""RemoteJWKS against a real HTTP server on loopback: caching, ETag, cooldown, failures, caps."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from request_crypto.errors import InvalidArgumentError, KeySetUnavailableError
from request_crypto.keys.remote import RemoteJWKS
from request_crypto.keys.signing import generate_signing_jwk, public_key_set


class Site:
    """What the server answers; every request is counted (and its If-None-Match kept)."""

    def __init__(self) -> None:
        self.status = 200
        self.document: dict[str, Any] = public_key_set(
            {"keys": [generate_signing_jwk("a", "ES256")]}
        )
        self.headers: dict[str, str] = {"Cache-Control": "max-age=300", "ETag": '"v1"'}
        self.raw: bytes | None = None
        self.requests = 0
        self.if_none_match: list[str | None] = []
        self.delay = 0.0


@pytest.fixture
def site() -> Iterator[tuple[Site, str]]:
    state = Site()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            state.if_none_match.append(self.headers.get("If-None-Match"))
            time.sleep(state.delay)
            etag = state.headers.get("ETag")
            if etag and self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("Cache-Control", state.headers.get("Cache-Control", ""))
                self.end_headers()
                return
            body = state.raw if state.raw is not None else json.dumps(state.document).encode()
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            if state.status in (301, 302):
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fetched_once_then_cached_for_max_age_then_revalidated_with_etag(site) -> None:
    state, url = site
    clock = Clock()
    remote = RemoteJWKS(url, clock=clock)
    assert remote.verification_key("a") is not None
    assert remote.verification_key("a") is not None
    assert state.requests == 1
    clock.now += 299
    remote.keys_for_alg("ES256")
    assert state.requests == 1
    clock.now += 2  # past max-age: revalidated, 304 keeps the set
    assert remote.verification_key("a") is not None
    assert state.requests == 2 and state.if_none_match[-1] == '"v1"'


def test_max_age_is_clamped_between_floor_and_ceiling(site) -> None:
    state, url = site
    clock = Clock()
    state.headers = {"Cache-Control": "max-age=1"}
    remote = RemoteJWKS(url, clock=clock, min_max_age=60, cooldown=0)
    remote.kids()
    clock.now += 30
    remote.kids()
    assert state.requests == 1  # the floor (60 s), not the server's 1 s
    state.headers = {"Cache-Control": "max-age=999999"}
    clock.now += 61
    remote.kids()
    assert state.requests == 2
    clock.now += 3601
    remote.kids()
    assert state.requests == 3  # the ceiling (3600 s here), not the server's 11 days


def test_unknown_kid_refetches_at_most_once_per_cooldown(site) -> None:
    state, url = site
    clock = Clock()
    remote = RemoteJWKS(url, clock=clock, cooldown=30)
    remote.kids()
    clock.now += 31
    for _ in range(20):
        assert remote.verification_key("forged") is None
    assert state.requests == 2
    state.document = public_key_set({"keys": [generate_signing_jwk("b", "EdDSA")]})
    state.headers = {"ETag": '"v2"', "Cache-Control": "max-age=300"}
    clock.now += 31
    assert remote.verification_key("b") is not None  # a rotated sender key is picked up
    assert state.requests == 3


def test_failure_keeps_the_last_good_set(site) -> None:
    state, url = site
    clock = Clock()
    remote = RemoteJWKS(url, clock=clock, cooldown=30)
    remote.kids()
    state.status = 500
    state.headers = {}
    clock.now += 400
    assert remote.verification_key("a") is not None  # the fetch failed, the old set serves
    assert state.requests == 2
    state.raw = b"not json"
    state.status = 200
    clock.now += 31
    assert remote.verification_key("a") is not None
    assert state.requests == 3


def test_no_set_ever_fetched_is_unavailable(site) -> None:
    state, url = site
    state.status = 503
    with pytest.raises(KeySetUnavailableError, match="could not be fetched"):
        RemoteJWKS(url).verification_key("a")


def test_redirects_are_not_followed_and_size_is_capped(site) -> None:
    state, url = site
    state.status = 302
    with pytest.raises(KeySetUnavailableError, match="redirects are not followed"):
        RemoteJWKS(url).kids()
    state.status = 200
    with pytest.raises(KeySetUnavailableError, match="over 100 bytes"):
        RemoteJWKS(url, max_size=100).kids()


def test_a_published_set_with_private_members_is_refused(site) -> None:
    state, url = site
    state.document = {"keys": [generate_signing_jwk("a", "ES256")]}
    with pytest.raises(KeySetUnavailableError, match="private key"):
        RemoteJWKS(url).kids()


def test_one_fetch_in_flight(site) -> None:
    state, url = site
    state.delay = 0.5
    remote = RemoteJWKS(url)
    threads = [threading.Thread(target=remote.kids) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.requests == 1


def test_only_http_urls() -> None:
    for url in ("file:///etc/passwd", "ftp://x/jwks", "/tmp/jwks.json"):
        with pytest.raises(InvalidArgumentError, match="https://"):
            RemoteJWKS(url)


def test_a_decryptor_verifies_with_the_remote_set(site) -> None:
    from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor

    state, url = site
    sender = {"keys": [generate_signing_jwk("a", "ES256")]}
    state.document = public_key_set(sender)
    receiver = JWKManager()
    receiver.add_key("rx")
    body = RequestEncryptor(receiver.get_public_jwks(), sign_with=sender).encrypt("rx", {"n": 1})
    decryptor = RequestDecryptor(receiver.get_private_jwks(), verify_with=RemoteJWKS(url))
    assert decryptor.decrypt_request(body).signer.kid == "a"
