"""Kafka secrets travel by reference: settings (and so actor arguments) hold `${env:NAME}` or
`${file:PATH}`, and only the process that builds a client reads the value."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from choreography.config import ConfigError, settings_from_metadata
from events.log.kafka_io import admin_config, consumer_config, producer_config
from events.log.secrets import SecretError, resolve

REPO = Path(__file__).resolve().parents[2]
CANARY = "canary-7d1f0c2b9e"


def _metadata(security: dict[str, str] | None = None) -> dict:
    metadata = yaml.safe_load((REPO / "cluster.yaml").read_text())["metadata"]
    metadata["kafka"] = {"bootstrap_servers": "127.0.0.1:9092", **({"security": security} if security else {})}
    return metadata


SCRAM = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "choreo"}


def test_the_password_variable_becomes_a_reference_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"CHOREO_KAFKA_PASSWORD": CANARY}
    settings = settings_from_metadata(_metadata(SCRAM), env=env)
    assert settings.kafka.security["sasl.password"] == "${env:CHOREO_KAFKA_PASSWORD}"
    assert CANARY.encode() not in pickle.dumps(settings), "the value never travels with the settings"
    assert CANARY not in repr(settings) + str(settings.model_dump())
    monkeypatch.setenv("CHOREO_KAFKA_PASSWORD", CANARY)
    for config in (
        producer_config(settings.kafka.client_config(), "tid"),
        consumer_config(settings.kafka.client_config(), "group"),
        admin_config(settings.kafka.client_config()),
    ):
        assert config["sasl.password"] == CANARY, "a client is built with the value"
        assert config["sasl.username"] == "choreo"


def test_a_password_file_is_read_by_the_process_that_connects(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(CANARY + "\n")
    settings = settings_from_metadata(_metadata(SCRAM), env={"CHOREO_KAFKA_PASSWORD_FILE": str(secret)})
    assert settings.kafka.security["sasl.password"] == f"${{file:{secret}}}"
    assert producer_config(settings.kafka.client_config())["sasl.password"] == CANARY


def test_a_password_written_into_the_yaml_is_refused_with_what_to_do_instead() -> None:
    with pytest.raises(ConfigError) as refused:
        settings_from_metadata(_metadata({**SCRAM, "sasl.password": CANARY}), env={})
    message = str(refused.value)
    assert "sasl.password" in message and "${env:CHOREO_KAFKA_PASSWORD}" in message and "${file:" in message
    assert CANARY not in message
    with pytest.raises(ConfigError, match=r"ssl\.key\.password"):
        settings_from_metadata(_metadata({"ssl.key.password": "literal"}), env={})


def test_an_unresolvable_reference_says_which_property_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHOREO_KAFKA_PASSWORD", raising=False)
    with pytest.raises(SecretError, match=r"sasl\.password: environment variable CHOREO_KAFKA_PASSWORD is not set"):
        resolve({"sasl.password": "${env:CHOREO_KAFKA_PASSWORD}"})
    with pytest.raises(SecretError, match=r"ssl.key.password: cannot read .*missing"):
        resolve({"ssl.key.password": f"${{file:{tmp_path / 'missing'}}}"})
    plain = {"bootstrap.servers": "b:9092", "sasl.username": "u"}
    assert resolve(plain) is plain, "nothing to resolve: the same dict"
