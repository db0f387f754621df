"""The e2e tests reuse the integration fixtures (real Kafka, Ray, embedded ClickHouse)."""

from tests.integration.conftest import kafka_bootstrap, make_settings, ray_runtime, start_system

__all__ = ["kafka_bootstrap", "make_settings", "ray_runtime", "start_system"]
