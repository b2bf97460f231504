"""ReceiverConfig: one object for `serve`, `create_app` and `app_from_env`; no setting lost."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from request_crypto import JWKManager
from request_crypto.errors import InvalidArgumentError
from request_crypto.keyfile import write_jwks
from request_crypto.receiver import ReceiverConfig, app_from_env, create_app
from request_crypto.receiver import cli as receiver_cli
from request_crypto.receiver.config import ENV_PREFIX, ReceiverSettings, env_name
from request_crypto.receiver.sinks import StdoutSink

#: A value other than the default for every field; a new field must get one here.
NON_DEFAULT: dict[str, Any] = {
    "jwks": Path("/srv/keys/private_jwks.json"),
    "sink": "jsonl:///var/lib/payloads.jsonl",
    "max_body": 3 * 1024 * 1024,
    "reload_interval": 2.25,
    "jwks_max_age": 61,
    "decrypt_threads": 3,
    "large_bodies": 5,
    "max_batch": 17,
    "header_timeout": 4.5,
    "body_timeout": 9.75,
    "min_body_rate": 4096,
    "key_reload_grace": 12.5,
    "host": "0.0.0.0",
    "port": 9999,
    "workers": 4,
    "log_level": "debug",
    "log_format": "json",
    "http": "h11",
    "limit_concurrency": 77,
    "password_file": Path("/srv/keys/password"),
    "verify_with": "https://senders.example/jwks.json",
    "require_signature": True,
    "issuer": "kibana",
    "audience": "telemetry",
    "leeway": 30.0,
}


def fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(ReceiverConfig))


def test_every_field_round_trips_through_the_environment() -> None:
    names = [field.name for field in fields()]
    assert sorted(names) == sorted(NON_DEFAULT), "give every new field a non-default value here"
    config = ReceiverConfig(**NON_DEFAULT)
    for field in fields():
        assert getattr(config, field.name) != field.default, field.name
    environment = config.to_env()
    assert sorted(environment) == sorted(env_name(name) for name in names)
    assert all(name.startswith(ENV_PREFIX) for name in environment)
    assert ReceiverConfig.from_env(environment) == config


def test_automatic_values_round_trip_too() -> None:
    config = ReceiverConfig(jwks=Path("/k.json"), reload_interval=None)
    assert config.decrypt_threads is None
    assert ReceiverConfig.from_env(config.to_env()) == config


def test_unset_variables_take_the_defaults() -> None:
    config = ReceiverConfig.from_env({env_name("jwks"): "/k.json"})
    assert config == ReceiverConfig(jwks=Path("/k.json"))


@pytest.mark.parametrize(
    # Any text is a path or a host name (one that resolves to nothing fails at bind).
    "field",
    [
        f.name
        for f in dataclasses.fields(ReceiverConfig)
        # free text: any value parses (a path, a host name, an issuer)
        if f.name not in ("jwks", "host", "password_file", "verify_with", "issuer", "audience")
    ],
)
def test_a_value_that_does_not_parse_names_its_variable(field: str) -> None:
    environment = {env_name("jwks"): "/k.json", env_name(field): "nonsense:value"}
    with pytest.raises(InvalidArgumentError) as caught:
        ReceiverConfig.from_env(environment)
    assert str(caught.value).startswith(f"{ENV_PREFIX}{field.upper()}=")


def test_a_missing_key_set_variable_says_what_it_is() -> None:
    with pytest.raises(InvalidArgumentError, match=f"{ENV_PREFIX}JWKS is not set"):
        ReceiverConfig.from_env({})


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"max_body": 0}, "max_body"),
        ({"large_bodies": 0}, "large_bodies"),
        ({"decrypt_threads": 0}, "decrypt_threads"),
        ({"max_batch": 0}, "max_batch"),
        ({"body_timeout": 0}, "body_timeout"),
        ({"key_reload_grace": -1}, "key_reload_grace"),
        ({"reload_interval": -1}, "reload_interval"),
        ({"port": 70000}, "port"),
        ({"workers": 0}, "workers"),
        ({"log_level": "loud"}, "log_level"),
        ({"log_format": "xml"}, "log_format"),
        ({"http": "zttp"}, "http"),
        ({"sink": "nope://"}, "sink"),
    ],
)
def test_bad_values_are_refused_when_the_config_is_made(
    changes: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=needle):
        ReceiverConfig(jwks=Path("/k.json"), **changes)


def test_only_a_path_and_a_url_can_travel_to_workers(tmp_path: Path) -> None:
    keys = JWKManager()
    with pytest.raises(InvalidArgumentError, match="loaded key set"):
        ReceiverConfig(jwks=keys).to_env()
    with pytest.raises(InvalidArgumentError, match="Sink object"):
        ReceiverConfig(jwks=tmp_path / "k.json", sink=StdoutSink()).to_env()


def test_the_keyword_form_of_create_app_takes_exactly_the_config_fields() -> None:
    hints = typing.get_type_hints(ReceiverSettings, include_extras=False, localns=_sink_names())
    assert sorted(hints) == sorted(f.name for f in fields() if f.name != "jwks")


def _sink_names() -> dict[str, Any]:
    from request_crypto.receiver.sinks import Sink

    return {"Sink": Sink}


@pytest.fixture
def key_file(tmp_path: Path, private_jwks: dict[str, Any]) -> Path:
    path = tmp_path / "private_jwks.json"
    write_jwks(path, private_jwks)
    return path


def test_create_app_keywords_and_config_are_one_path(key_file: Path) -> None:
    settings: ReceiverSettings = {"sink": "-", "decrypt_threads": 3, "large_bodies": 1}
    by_keywords = create_app(key_file, **settings).state.receiver
    by_config = create_app(ReceiverConfig(jwks=key_file, **settings)).state.receiver
    assert by_keywords.config == by_config.config == ReceiverConfig(jwks=key_file, **settings)
    assert (by_keywords.decrypt_threads, by_keywords.large_bodies) == (3, 1)
    replaced = create_app(by_config.config, max_batch=9).state.receiver
    assert replaced.config == dataclasses.replace(by_config.config, max_batch=9)


def test_app_from_env_uses_every_app_setting(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`decrypt_threads`, `large_bodies`, `max_batch` used to be lost on the way to workers."""
    config = ReceiverConfig(
        jwks=key_file,
        sink="-",
        decrypt_threads=3,
        large_bodies=5,
        max_batch=17,
        jwks_max_age=61,
        reload_interval=2.25,
        max_body=4096,
    )
    for name, value in config.to_env().items():
        monkeypatch.setenv(name, value)
    receiver = app_from_env().state.receiver
    assert receiver.config == config
    assert (receiver.decrypt_threads, receiver.large_bodies, receiver.max_batch) == (3, 5, 17)
    assert (receiver.jwks_max_age, receiver.reload_interval, receiver.max_body) == (61, 2.25, 4096)


def test_serve_builds_one_config_with_every_option(
    key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ReceiverConfig field is a `serve` option, and each option reaches the config."""
    planned: list[Any] = []

    def capture(plan: Any, sock: Any) -> None:
        planned.append(plan)

    monkeypatch.setattr(receiver_cli, "_run", capture)
    app = typer.Typer()
    receiver_cli.register(app)
    options = {
        "jwks": str(key_file),
        "sink": f"jsonl:///{tmp_path / 'p.jsonl'}",
        "max-body": "3MiB",
        "reload-interval": "2.25",
        "jwks-max-age": "61",
        "decrypt-threads": "3",
        "large-bodies": "5",
        "max-batch": "17",
        "header-timeout": "4.5",
        "body-timeout": "9.75",
        "min-body-rate": "4KiB",
        "key-reload-grace": "12.5",
        "host": "127.0.0.1",
        "port": "0",
        "workers": "4",
        "log-level": "debug",
        "log-format": "json",
        "http": "h11",
        "limit-concurrency": "77",
        "password-file": str(tmp_path / "password"),
        "verify-with": "https://senders.example/jwks.json",
        "require-signature": None,  # a flag
        "issuer": "kibana",
        "audience": "telemetry",
        "leeway": "30",
    }
    assert sorted(name.replace("-", "_") for name in options) == sorted(NON_DEFAULT)
    (tmp_path / "password").write_text("unused: the key file is plain\n")
    arguments = [
        word
        for name, value in options.items()
        for word in ((f"--{name}",) if value is None else (f"--{name}", value))
    ]
    result = CliRunner().invoke(app, ["serve", *arguments])
    assert result.exit_code == 0, result.output
    (plan,) = planned
    expected = {
        **NON_DEFAULT,
        "jwks": key_file,
        "sink": options["sink"],
        "host": "127.0.0.1",
        "port": 0,
        "password_file": tmp_path / "password",
    }
    assert plan.config == ReceiverConfig(**expected)
    assert ReceiverConfig.from_env(plan.config.to_env()) == dataclasses.replace(
        plan.config, jwks=key_file.resolve()
    )
