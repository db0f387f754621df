"""What TLS + SCRAM-SHA-512 costs: the same closed-loop loadtest through the whole choreography,
and the raw Kafka floor (transactions of 2,000, read_committed), against a plaintext broker and a
`--secure` one (SASL_SSL), both local, in the same run. Rounds alternate plaintext and secured so drift on a
noisy machine hits both alike.

    python -m bench.secure [--duration 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import ray

from actors.runtime import tune_gc
from bench.common import bench_settings, console, report
from bench.e2e import raw_kafka_floor, run_choreo
from choreography.broker import LocalBroker, free_ports
from choreography.config import KafkaSettings, Settings
from choreography.topology import ensure_topics


def on(settings: Settings, broker: LocalBroker) -> Settings:
    config = broker.client_config()
    bootstrap = config.pop("bootstrap.servers")
    return settings.model_copy(update={"kafka": KafkaSettings(bootstrap_servers=bootstrap, security=config)})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    tune_gc()
    work = Path(tempfile.mkdtemp(prefix="choreo-bench-secure-"))
    brokers = {
        "plaintext": LocalBroker(free_ports(2), work / "plain", heap="512m"),
        "SASL_SSL + SCRAM-SHA-512": LocalBroker(free_ports(2), work / "secure", heap="512m", secure=True),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in brokers}
    try:
        for broker in brokers.values():
            broker.start()
        for r in range(args.rounds):
            for name, broker in brokers.items():
                console.print(f"round {r + 1}: {name} ...")
                settings = on(bench_settings(args.config, work / f"{name[:5]}-{r}"), broker)
                ensure_topics(settings)
                choreo = run_choreo(settings, args.duration, args.concurrency)
                ray.shutdown()
                raw = raw_kafka_floor(settings, 200_000, 450)
                runs[name].append({"sagas_per_s": choreo["sagas_per_s"], "raw_messages_per_s": raw["messages_per_s"],
                                   "p50_ms": choreo["latency_ms"]["start_to_terminal"]["p50"]})  # fmt: skip
    finally:
        for broker in brokers.values():
            broker.stop()
    rows = [
        {
            "scenario": name,
            "sagas_per_s": statistics.median(r["sagas_per_s"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "raw_messages_per_s": statistics.median(r["raw_messages_per_s"] for r in results),
        }
        for name, results in runs.items()
    ]
    plain, secure = rows
    ratios = {
        "loadtest_secure_to_plaintext": secure["sagas_per_s"] / plain["sagas_per_s"],
        "raw_secure_to_plaintext": secure["raw_messages_per_s"] / plain["raw_messages_per_s"],
    }
    report("secure", rows, {"runs": runs, "ratios": ratios})
    console.print(", ".join(f"{k}: {v:.2f}" for k, v in ratios.items()))
    return {"rows": rows, "ratios": ratios}


if __name__ == "__main__":
    main()
