"""`choreo graph`: the choreography map drawn from the declared wiring, in Mermaid, DOT and SVG,
and the copy in the README that CI keeps equal to the wiring."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from choreography.cli import main
from choreography.config import load_settings
from choreography.graph import choreography_map, embed, embedded, render, sent_commands
from choreography.lag import LagRow, edge_load, with_rates
from choreography.policies import Meta
from events.base import Command
from events.log.topics import policy_group, projection_group, shard_group
from shop.messages.inventory import ReserveStock
from shop.messages.payment import CapturePayment, RefundPayment
from shop.policies import ORDER_POLICIES, WIRING

ROOT = Path(__file__).resolve().parents[2]
TRANSFERS = ROOT / "examples" / "transfers"


def test_every_wiring_row_of_the_shop_is_an_edge_to_the_command_it_sends() -> None:
    the_map = choreography_map(load_settings(ROOT / "cluster.yaml"))
    edges = the_map.edges()
    rows = sum(len(wiring) for wiring in WIRING.values())
    assert len(the_map.reactions) == rows  # no row of the shop matches more than one event type
    assert ("OrderPlaced", "ReserveStock") in edges
    assert ("OrderCancelled", "RefundPayment") in edges and ("OrderCancelled", "ReleaseStock") in edges
    assert ("PaymentCaptured", "RecordPaymentCaptured") in edges
    assert "?" not in {command for _, command in edges}  # every shop policy names its commands
    order_rows = {r.event for r in the_map.reactions if r.service == "order"}
    assert order_rows == {row.event.type_name() for row in ORDER_POLICIES}


def test_the_map_shows_where_sagas_start_and_what_reads_the_topics() -> None:
    the_map = choreography_map(load_settings(ROOT / "cluster.yaml"))
    assert ("order", "PlaceOrder") in the_map.client_commands()
    assert ("order", "ReserveStock") not in the_map.client_commands()
    assert the_map.deadlines == (("order", "ExpireOrder"),)
    mermaid = the_map.mermaid()
    assert 'subgraph s_order["order"]' in mermaid
    assert 'e_order_OrderPlaced -- "inventory: reserve_each_line" --> c_inventory_ReserveStock' in mermaid
    assert 's_payment -- "payment-events" --> p_sales_per_minute' in mermaid
    assert "deadline --> c_order_ExpireOrder" in mermaid


def _vague(e: object, m: Meta) -> list[Command]:
    return []


def _union(e: object, m: Meta) -> Sequence[CapturePayment | RefundPayment]:
    return []


def _partly_vague(e: object, m: Meta) -> list[ReserveStock | Command]:
    return []


def test_a_policy_names_its_commands_by_its_return_annotation() -> None:
    assert sent_commands(WIRING["inventory"][0].policy) == (ReserveStock,)
    assert sent_commands(_union) == (CapturePayment, RefundPayment)
    assert sent_commands(_vague) == ()
    assert sent_commands(_partly_vague) == ()
    assert sent_commands(lambda e, m: []) == ()


@pytest.fixture
def transfers_with_a_new_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The transfers example's cluster file, and a copy whose account service also refunds an
    expired transfer: one more wiring row than the original."""
    (tmp_path / "extra_wiring.py").write_text(
        "from __future__ import annotations\n"
        "from choreography.policies import Meta, On\n"
        "from transfers.messages import Refund, TransferExpired\n"
        "from transfers.policies import ACCOUNT_POLICIES\n\n"
        "def refund_expired(e: TransferExpired, m: Meta) -> list[Refund]:\n"
        "    return []\n\n"
        "WIRING = [*ACCOUNT_POLICIES, On(TransferExpired, refund_expired)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "extra_wiring", raising=False)
    doc = yaml.safe_load((TRANSFERS / "cluster.yaml").read_text())
    doc["metadata"]["python_path"] = [str(TRANSFERS), str(tmp_path)]
    doc["metadata"].pop("schema_snapshot", None)
    original = tmp_path / "original.yaml"
    original.write_text(yaml.safe_dump(doc))
    doc["metadata"]["services"]["account"]["policies"] = "extra_wiring:WIRING"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    return original, changed


def test_choreo_graph_shows_a_policy_added_to_the_wiring(
    transfers_with_a_new_policy: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    original, changed = transfers_with_a_new_policy
    edge = 'e_transfer_TransferExpired -- "account: refund_expired" --> c_account_Refund'
    main(["graph", str(original)])
    before = capsys.readouterr().out
    main(["graph", str(changed)])
    after = capsys.readouterr().out
    assert edge not in before
    assert edge in after
    assert set(after.splitlines()) - set(before.splitlines()) == {f"  {edge}"}


def test_graph_check_fails_on_a_stale_map_and_passes_once_embedded(
    transfers_with_a_new_policy: tuple[Path, Path], tmp_path: Path
) -> None:
    original, changed = transfers_with_a_new_policy
    doc = tmp_path / "doc.md"
    doc.write_text("# Transfers\n\nSome prose.\n")
    with pytest.raises(SystemExit) as missing:
        main(["graph", str(original), "--check", str(doc)])
    assert missing.value.code == 1
    main(["graph", str(original), "--embed", str(doc)])
    main(["graph", str(original), "--check", str(doc)])  # passes: no exit
    assert doc.read_text().startswith("# Transfers\n\nSome prose.\n")
    with pytest.raises(SystemExit) as stale:
        main(["graph", str(changed), "--check", str(doc)])
    assert stale.value.code == 1
    main(["graph", str(changed), "--embed", str(doc)])
    assert "refund_expired" in doc.read_text() and doc.read_text().count("```mermaid") == 1


def test_embed_replaces_only_the_block_between_the_markers() -> None:
    text = embed("before\n", "flowchart LR\n  a --> b\n") + "after\n"
    assert embedded(text) == "flowchart LR\n  a --> b\n"
    again = embed(text, "flowchart LR\n  a --> c\n")
    assert again.startswith("before\n") and again.endswith("after\n")
    assert embedded(again) == "flowchart LR\n  a --> c\n"
    assert embedded("no markers here") is None


def test_the_readme_map_matches_the_reference_wiring() -> None:
    """CI's check: the README embeds the map of cluster.yaml, regenerated when the wiring changes."""
    readme = (ROOT / "README.md").read_text()
    assert embedded(readme) == choreography_map(load_settings(ROOT / "cluster.yaml")).mermaid()


def test_the_map_renders_to_svg_with_the_pip_installed_renderer(tmp_path: Path) -> None:
    svg = render(choreography_map(load_settings(ROOT / "cluster.yaml")).dot(), "svg").decode()
    assert "<svg" in svg
    for label in ("ReserveStock", "inventory: reserve_each_line", "sales_per_minute", "deadline"):
        assert label in svg
    out = tmp_path / "map.png"
    main(["graph", str(ROOT / "cluster.yaml"), "--format", "png", "-o", str(out)])
    assert out.read_bytes().startswith(b"\x89PNG")


def test_live_labels_carry_each_consumer_groups_rate_and_lag_on_the_edge_topic() -> None:
    settings = load_settings(ROOT / "cluster.yaml")
    ns = settings.namespace
    before = [
        LagRow(policy_group(ns, "inventory"), "policy", "order-events", 0, 100, 150),
        LagRow(policy_group(ns, "inventory"), "policy", "order-events", 1, 200, 210),
        LagRow(projection_group(ns, "orders"), "projection", "order-events", 0, 0, 150),
        LagRow(shard_group(ns, "inventory"), "shard", "inventory-commands", 0, 5, 9),
    ]
    after = [LagRow(r.group, r.kind, r.topic, r.partition, r.committed + 30, r.end + 40) for r in before]
    load = edge_load(settings, with_rates(after, before, 2.0))
    assert load[("inventory", "order-events")] == (30.0, 60 + 20)  # (30 + 30) / 2 s; lags 60 and 20
    assert load[("orders", "order-events")] == (15.0, 160)
    assert not any(consumer == "inventory" and topic == "inventory-commands" for consumer, topic in load)
    mermaid = choreography_map(settings).mermaid(load)
    assert '"inventory: reserve_each_line<br/>30 ev/s, lag 80" --> c_inventory_ReserveStock' in mermaid
    assert 's_order -- "order-events<br/>15 ev/s, lag 160" --> p_orders' in mermaid
    assert '"payment: capture_payment" --> c_payment_CapturePayment' in mermaid  # no figures: no label change
    assert 'label="inventory: reserve_each_line\\n30 ev/s, lag 80"' in choreography_map(settings).dot(load)
