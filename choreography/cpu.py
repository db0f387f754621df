"""The loadtest's CPU cost model: CPU seconds per role (the Kafka broker, each service's shards,
the policy runners, the projection host(s), Ray's own daemons and the client), sampled before and
after a run; divided by the orders completed, CPU-milliseconds per order. Beside it, the Kafka
transactions each role committed per order: the broker's cost grows with them.

Actors report their own process's CPU time. The broker and Ray's daemons are found in /proc, so
they are counted when they run on this machine (a local broker, a local Ray)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from actors.runtime import cpu_s

Sample = dict[str, dict[int, tuple[float, int]]]
"""role -> {pid: (CPU seconds so far, Kafka transactions committed so far)}"""

RAY_DAEMONS = ("raylet", "gcs_server")


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of process `pid` on this machine, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes() -> list[tuple[int, list[str]]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")))
            except OSError:
                continue
    return found


def local_broker_pids(bootstrap: str, processes: list[tuple[int, list[str]]]) -> list[int]:
    """The Kafka broker processes (kafka.Kafka) among `processes` that listen on a port `bootstrap` names."""
    ports = {a.rsplit(":", 1)[-1] for a in bootstrap.split(",") if a.split(":")[0] in ("127.0.0.1", "localhost")}
    pids = []
    for pid, args in processes:
        if "kafka.Kafka" not in args or args.index("kafka.Kafka") + 1 >= len(args):
            continue
        try:
            props = Path(args[args.index("kafka.Kafka") + 1]).read_text().splitlines()
        except OSError:
            continue
        listeners = next((line for line in props if line.startswith("listeners=")), "")
        if any(f":{port}," in listeners + "," for port in ports):
            pids.append(pid)
    return pids


def sample(system: Any) -> Sample:
    """CPU seconds so far of every process of the run, by role."""
    roles: Sample = {}
    calls = {f"{service} shards": [s.info.remote() for s in shards] for service, shards in system.shards.items()}
    calls["policy runners"] = [r.info.remote() for rs in system.policy_runners.values() for r in rs]
    calls["projection hosts"] = [h.process.remote() for h in system.projection_hosts.values()]
    for role, refs in calls.items():
        roles[role] = {
            i["pid"]: (i["cpu_s"], i.get("transactions", 0)) for i in ray.get(refs, timeout=60) if "cpu_s" in i
        }
    processes = _processes()
    roles["Kafka broker"] = _by_pid(local_broker_pids(system.settings.kafka.bootstrap_servers, processes))
    session = ray.get_runtime_context().get_session_name()  # this Ray's daemons, not another's on the machine
    roles["Ray daemons"] = _by_pid(
        [pid for pid, args in processes if Path(args[0]).name in RAY_DAEMONS and any(session in a for a in args)]
    )
    roles["client"] = {os.getpid(): (cpu_s(), 0)}
    return roles


def _by_pid(pids: list[int]) -> dict[int, tuple[float, int]]:
    return {pid: (t, 0) for pid in pids if (t := proc_cpu_s(pid)) is not None}


def cost(before: Sample, after: Sample, orders: int, seconds: float) -> list[dict[str, Any]]:
    """Per role: processes, CPU seconds used between the samples, CPU-ms per order, the share of one
    core, and Kafka transactions committed, in all and per order; then the total. A process that
    started meanwhile (a restart) counts from zero."""

    def row(role: str, processes: int, used: float, transactions: int) -> dict[str, Any]:
        return {"role": role, "processes": processes, "cpu_s": used,
                "cpu_ms_per_order": 1000 * used / orders if orders else 0.0,
                "share_of_one_core": used / seconds if seconds else 0.0,
                "transactions": transactions,
                "transactions_per_order": transactions / orders if orders else 0.0}  # fmt: skip

    def used(role: str, field: int) -> Any:
        return sum(v[field] - before.get(role, {}).get(pid, (0.0, 0))[field] for pid, v in after[role].items())

    rows = [row(role, len(after[role]), used(role, 0), used(role, 1)) for role in after]
    total = row("total", *(sum(r[k] for r in rows) for k in ("processes", "cpu_s", "transactions")))
    return [*rows, total]
