"""The bootstrap: cluster.yaml topology, env overrides, errors that name the key, topic capping."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from choreography.config import ConfigError, load_settings, validate_cluster_file
from choreography.topology import capped
from events.log.topics import owned_partitions, partition_for, shard_for

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster.yaml"


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_repo_cluster_yaml_loads_with_events_kept_forever() -> None:
    settings = load_settings(CLUSTER, env={})
    events = settings.topic("order-events")
    assert events.config["retention.ms"] == "-1"
    assert settings.topic("order-snapshots").config["cleanup.policy"] == "compact"
    assert settings.services["order"].shards >= 1
    assert settings.clickhouse.dsn.startswith("chdb:///")


def test_repo_cluster_yaml_passes_rays_own_validator() -> None:
    assert validate_cluster_file(CLUSTER).services


def test_unknown_top_level_key_is_rejected_by_ray_validation(tmp_path: Path) -> None:
    doc = yaml.safe_load(CLUSTER.read_text())
    doc["bogus_key"] = 1
    with pytest.raises(ConfigError, match="bogus_key"):
        validate_cluster_file(_write(tmp_path, doc))


def test_bad_metadata_names_the_offending_key(tmp_path: Path) -> None:
    doc = yaml.safe_load(CLUSTER.read_text())
    doc["metadata"]["services"]["order"]["shards"] = 0
    with pytest.raises(ConfigError, match=r"metadata\.services\.order\.shards"):
        load_settings(_write(tmp_path, doc), env={})


def test_service_without_its_topics_is_rejected(tmp_path: Path) -> None:
    doc = yaml.safe_load(CLUSTER.read_text())
    doc["metadata"]["topics"] = [t for t in doc["metadata"]["topics"] if t["name"] != "shipping-commands"]
    with pytest.raises(ConfigError, match="topic 'shipping-commands' is not declared"):
        load_settings(_write(tmp_path, doc), env={})


def test_a_service_must_name_its_domain_code(tmp_path: Path) -> None:
    doc = yaml.safe_load(CLUSTER.read_text())
    doc["metadata"]["services"]["ghost"] = {"shards": 1}
    with pytest.raises(ConfigError, match=r"metadata\.services\.ghost\.aggregate: Field required"):
        load_settings(_write(tmp_path, doc), env={})


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("services", "order", "aggregate"), "bookings.domain:Booking",
         "metadata.services.order.aggregate: cannot import 'bookings.domain:Booking' (No module named 'bookings')"),
        (("services", "order", "aggregate"), "shop.aggregates.order:NoSuchThing",
         "metadata.services.order.aggregate: cannot import 'shop.aggregates.order:NoSuchThing' (module "
         "'shop.aggregates.order' has no 'NoSuchThing')"),
        (("services", "order", "aggregate"), "bookings",
         "metadata.services.order.aggregate: String should match pattern"),
        (("services", "inventory", "aggregate"), "collections:OrderedDict",
         "metadata.services.inventory.aggregate: 'collections:OrderedDict' does not implement initial/decide/evolve"),
        (("services", "payment", "aggregate"), "shop.aggregates.shipping:ShipmentAggregate",
         "metadata.services.payment.aggregate: 'shop.aggregates.shipping:ShipmentAggregate' has aggregate_type "
         "'shipping', not 'payment'"),
        (("services", "inventory", "deadline_s"), 5,
         "metadata.services.inventory.aggregate: deadline_s is set but 'shop.aggregates.inventory:StockItemAggregate' "
         "has no deadline support"),
        (("services", "order", "messages"), "shop.messages:INVENTORY_MESSAGES",
         "metadata.services.order.messages: event StockAdded has aggregate_type 'inventory', not 'order'"),
        (("services", "order", "messages"), "shop.policies:ORDER_POLICIES",
         "metadata.services.order.messages: 'shop.policies:ORDER_POLICIES' is a list, not an events.Messages"),
        (("services", "order", "policies"), "shop.messages:ORDER_MESSAGES",
         "metadata.services.order.policies: 'shop.messages:ORDER_MESSAGES' is not a list of choreography.On rows"),
        (("services", "order", "policies"), "shop.policies:INVENTORY_POLICIES",
         "metadata.services.order.policies: order reacts to its own event OrderPlaced"),
        (("projections", "orders", "projection"), "shop.projections.sales:SalesProjection",
         "metadata.projections.orders.projection: 'shop.projections.sales:SalesProjection' is named "
         "'sales_per_minute', not 'orders'"),
        (("projections", "orders", "projection"), "shop.aggregates:OrderAggregate",
         "metadata.projections.orders.projection: 'shop.aggregates:OrderAggregate' is not a projections.Projection"),
        (("workload",), "shop.nothing:Here",
         "metadata.workload: cannot import 'shop.nothing:Here' (No module named 'shop.nothing')"),
    ],
)  # fmt: skip
def test_declared_domain_code_is_imported_and_checked_with_the_key_in_the_error(
    tmp_path: Path, where: tuple[str, ...], value: object, message: str
) -> None:
    doc = yaml.safe_load(CLUSTER.read_text())
    node = doc["metadata"]
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, doc), env={})
    assert message in str(caught.value)


def test_a_module_that_fails_on_import_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_domain.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = yaml.safe_load(CLUSTER.read_text())
    doc["metadata"]["services"]["order"]["aggregate"] = "broken_domain:Order"
    with pytest.raises(ConfigError, match=r"metadata\.services\.order\.aggregate: importing 'broken_domain:Order' "
                       r"failed \(RuntimeError: boom\)"):  # fmt: skip
        load_settings(_write(tmp_path, doc), env={})


def test_a_policy_may_only_react_to_declared_services(tmp_path: Path) -> None:
    doc = yaml.safe_load(CLUSTER.read_text())
    del doc["metadata"]["services"]["shipping"]
    doc["metadata"]["projections"]["events_raw"]["topics"].remove("shipping-events")
    with pytest.raises(ConfigError, match=r"metadata\.services\.order\.policies: reacts to ShipmentScheduled of "
                       r"undeclared service 'shipping'"):  # fmt: skip
        load_settings(_write(tmp_path, doc), env={})


def test_environment_overrides_the_file() -> None:
    env = {"CHOREO_KAFKA_BOOTSTRAP": "kafka:29092", "CHOREO_CLICKHOUSE_DSN": "http://ch:8123"}
    settings = load_settings(CLUSTER, env=env)
    assert settings.kafka.bootstrap_servers == "kafka:29092"
    assert settings.clickhouse.dsn == "http://ch:8123"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_replication_and_min_isr_are_capped_to_the_broker_count(caplog: pytest.LogCaptureFixture) -> None:
    spec = load_settings(CLUSTER, env={}).topic("order-events")
    assert spec.replication_factor == 3
    one = capped(spec, brokers=1)
    assert one.replication_factor == 1
    assert one.config["min.insync.replicas"] == "1"
    assert "capped" in caplog.text
    assert capped(spec, brokers=3) == spec


def test_partitions_are_stable_and_shards_own_disjoint_sets() -> None:
    assert partition_for("order-1", 8) == partition_for("order-1", 8)
    owned = [set(owned_partitions(s, 3, 8)) for s in range(3)]
    assert set().union(*owned) == set(range(8))
    assert sum(len(o) for o in owned) == 8
    assert partition_for("order-1", 8) in owned[shard_for("order-1", 3, 8)]
