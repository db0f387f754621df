"""The README's "Build your own service" section runs: its module is importable, its kit test
passes, and its cluster.yaml services pass the bootstrap's import checks."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from choreography.config import settings_from_metadata

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Build your own service")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)


@pytest.fixture
def bookings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module the section builds, written where its cluster file would be."""
    *module, _kit_test = _blocks("python")
    (tmp_path / "bookings.py").write_text("from __future__ import annotations\n\n" + "\n".join(module))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bookings", raising=False)
    return tmp_path


def test_the_section_has_the_module_the_test_and_the_declaration() -> None:
    assert len(_blocks("python")) == 4
    assert len(_blocks("yaml")) == 1


def test_the_kit_example_passes(bookings: Path) -> None:
    kit_test = _blocks("python")[-1]
    namespace: dict[str, object] = {}
    exec("from bookings import *\n" + kit_test, namespace)


def test_the_declared_services_pass_the_bootstrap(bookings: Path) -> None:
    metadata = yaml.safe_load(_blocks("yaml")[0])["metadata"]
    metadata["python_path"] = [str(bookings)]
    metadata["topics"] = [
        {"name": f"{service}-{kind}", "partitions": 2}
        for service in metadata["services"]
        for kind in ("commands", "events", "snapshots", "dedup")
    ]
    settings = settings_from_metadata(metadata, env={})
    assert settings.aggregate("booking").aggregate_type == "booking"
    assert settings.sources("booking") == ["seat"] and settings.sources("seat") == ["booking"]
    assert set(settings.registry().commands) == {"RequestBooking", "RecordHold", "HoldSeat"}
