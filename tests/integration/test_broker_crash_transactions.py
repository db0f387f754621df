"""A crash of the single local broker while transactions commit leaves none of them hanging.

Restarted as is, the broker loaded its transaction coordinator while the metadata log still named
the dead incarnation as every partition's leader; when the controller then fenced that
incarnation, the coordinator took the leaderless partitions for deleted ones and completed the
half-committed transactions without their markers. Those partitions kept an open transaction no
coordinator tracked, and read_committed readers stopped there for good.
LocalBroker now fences the dead incarnation before the broker starts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka import IsolationLevel, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from choreography.broker import LocalBroker, free_ports
from tests.e2e.faults import sigkill

PRODUCERS = 6
WIDTH = 3  # partitions each transaction writes
PARTITIONS = PRODUCERS * WIDTH


def producer_settings(bootstrap: str, n: int) -> dict[str, object]:
    return {"bootstrap.servers": bootstrap, "transactional.id": f"crash-{n}", "log_level": 0}


def committing(bootstrap: str, topic: str, stop: threading.Event) -> list[threading.Thread]:
    """Producers committing small transactions over WIDTH partitions each, as fast as they can,
    until `stop` or the broker goes away."""

    def run(n: int) -> None:
        producer = Producer(producer_settings(bootstrap, n))
        try:
            producer.init_transactions(30)
            while not stop.is_set():
                producer.begin_transaction()
                for p in range(n, PARTITIONS, PRODUCERS):
                    producer.produce(topic, b"x", partition=p)
                producer.commit_transaction(5)
        except KafkaException:
            return  # the broker died under it

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(PRODUCERS)]
    for thread in threads:
        thread.start()
    return threads


def unstable(admin: AdminClient, topic: str) -> dict[int, tuple[int, int]]:
    """Partitions whose last stable offset lags their end: (stable, end) by partition."""
    specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}

    def ends(level: IsolationLevel) -> dict[int, int]:
        futures = admin.list_offsets(specs, isolation_level=level, request_timeout=10)
        return {tp.partition: future.result().offset for tp, future in futures.items()}

    stable, end = ends(IsolationLevel.READ_COMMITTED), ends(IsolationLevel.READ_UNCOMMITTED)
    return {p: (stable[p], end[p]) for p in range(PARTITIONS) if stable[p] < end[p]}


def test_a_broker_crash_mid_commit_leaves_no_transaction_hanging(tmp_path: Path) -> None:
    broker = LocalBroker(port=free_ports(2), data_dir=tmp_path / "kafka", heap="512m")
    broker.start()
    try:
        bootstrap = broker.status().bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        topic = "crash"
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
        stop = threading.Event()
        threads = committing(bootstrap, topic, stop)
        time.sleep(4)
        sigkill(broker)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        broker.start()
        # The same producers start again, as a restarted shard's would, before they write
        # anything: the coordinator aborts what the crash left open. (A partition their next
        # transaction writes would close a hanging transaction too, but a shard writes nothing
        # to a partition it cannot read to its end.)
        for n in range(PRODUCERS):
            Producer(producer_settings(bootstrap, n)).init_transactions(30)
        deadline = time.monotonic() + 30
        while (held := unstable(admin, topic)) and time.monotonic() < deadline:
            time.sleep(1)
        assert not held, (
            f"partitions held back by a transaction the crash left open, (stable, end): {held}; "
            f"see {broker.log_file}"
        )
        log = broker.log_file.read_text(errors="replace")
        assert "likely deleted" not in log, "the coordinator skipped markers of partitions it found leaderless"
        # The cause, whatever the timing: the restarted broker found its dead incarnation still
        # registered, and the controller fenced that incarnation while the broker was starting.
        assert "DUPLICATE_BROKER_REGISTRATION" not in log, "a restarted broker waited out its dead incarnation"
    finally:
        broker.stop()
