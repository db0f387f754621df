"""The local broker's KRaft cluster id never starts with '-': kafka-storage's argument parser takes
such an id for an option ("argument --cluster-id/-t: expected one argument"), so about one start in
64 failed. Kafka's own Uuid.randomUuid() draws again in that case, and so does Choreo."""

from __future__ import annotations

import uuid

import pytest

import choreography.broker as broker


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64url of 0b111110... begins with '-'
    plain = uuid.UUID(bytes=bytes(range(16)))
    draws = iter([dashed, plain])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))

    cluster_id = broker._kafka_uuid()

    assert cluster_id == "AAECAwQFBgcICQoLDA0ODw"
    assert not cluster_id.startswith("-")
