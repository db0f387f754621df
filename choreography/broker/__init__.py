"""A real Apache Kafka broker (KRaft), or a cluster of them on one machine, run from Maven Central
jars for local use and CI."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from choreography.broker.secure import SecureMaterial, ensure_material

POM = Path(__file__).with_name("pom.xml")
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")


class BrokerError(RuntimeError):
    """The local broker cannot be installed, started or stopped; the message says what to do."""


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert match, "pom.xml lacks kafka.version"
    return match.group(1)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("CHOREO_CACHE_DIR") or Path(base) / "choreo")


def default_data_dir(port: int) -> Path:
    return default_cache_dir() / f"kafka-data-{port}"


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise BrokerError(f"'{tool}' was not found on PATH. {hint}")
    return path


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Fetch the broker jars with Maven once, into a cache outside the repository. Each version of
    pom.xml resolves into a directory of its own, so a change never mixes old and new jars, nor
    pulls jars from under a broker still running on the old ones."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    jars = (cache_dir or default_cache_dir()) / f"kafka-{kafka_version()}" / f"jars-{digest}"
    marker = jars / ".complete"
    if marker.exists():
        return jars
    mvn = _require(
        "mvn",
        "Install Apache Maven 3.6+ (Debian/Ubuntu: apt-get install maven; macOS: brew install maven).",
    )
    _require_java()
    jars.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={jars}", "-DincludeScope=runtime",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BrokerError("Maven could not resolve the Kafka jars:\n" + "\n".join(tail))
    marker.write_text(kafka_version())
    return jars


def _require_java() -> str:
    java = _require(
        "java",
        "Install a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; "
        "macOS: brew install openjdk@17).",
    )
    return java


def free_ports(count: int) -> int:
    """A base port with `count` free ports after it, for a private broker (or cluster), below the
    ephemeral range where clients take theirs meanwhile."""
    while True:
        base = random.randrange(20_000, 32_000)
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    port: int
    pid: int | None
    data_dir: Path
    managed: bool
    """True when this broker was started by choreo (we hold its pid file)."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class LocalBroker:
    """One KRaft node (broker + controller) on 127.0.0.1."""

    def __init__(
        self,
        port: int = 9092,
        data_dir: Path | None = None,
        cache_dir: Path | None = None,
        heap: str = "1g",
        node_id: int = 1,
        voters: str | None = None,
        secure: bool = False,
    ) -> None:
        """`voters` (`1@127.0.0.1:9093,2@...`): this node is one of a cluster's controller quorum;
        without, it is a cluster of its own. `secure`: clients connect with TLS and SCRAM
        (broker/secure.py); a data dir once started secure stays secure."""
        self.port = port
        self.controller_port = port + 1
        self.node_id = node_id
        self.voters = voters
        self.data_dir = (data_dir or default_data_dir(port)).resolve()
        self.material = SecureMaterial(self.data_dir / "secure")
        self.secure = secure or self.material.directory.exists()
        self.cache_dir = cache_dir
        self.heap = heap
        self.pid_file = self.data_dir / "broker.pid"
        self.log_file = self.data_dir / "broker.log"
        self.props_file = self.data_dir / "server.properties"

    # ---- status -----------------------------------------------------------------

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def client_config(self) -> dict[str, str]:
        """librdkafka properties of a client of this broker (secrets by reference)."""
        security = self.material.client_security() if self.secure else {}
        return {"bootstrap.servers": f"127.0.0.1:{self.port}", **security}

    def status(self) -> BrokerStatus:
        pid = self._pid()
        listening = port_open("127.0.0.1", self.port)
        return BrokerStatus(
            running=listening,
            port=self.port,
            pid=pid,
            data_dir=self.data_dir,
            managed=pid is not None,
        )

    # ---- start ------------------------------------------------------------------

    def _write_properties(self) -> None:
        logs = self.data_dir / "logs"
        replicas = 1 if self.voters is None else min(3, self.voters.count("@"))
        quorum = (
            {"controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}"}
            if self.voters is None
            else {"controller.quorum.voters": self.voters}
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            **quorum,
            "listeners": (f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(logs),
            "num.partitions": "1",
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min(2, replicas)),
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "message.max.bytes": "16777216",
            "log.retention.hours": "-1",
        }
        if self.secure:
            props.update(self.material.broker_properties(self.port, self.controller_port))
        self.props_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.props_file.chmod(0o600)  # a secure broker's holds its keystore password

    def _format(self, java: str, classpath: str, cluster_id: str | None) -> None:
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        cmd = [
            java, "-cp", classpath, "kafka.tools.StorageTool", "format",
            "-t", cluster_id or _kafka_uuid(), "-c", str(self.props_file),
        ]  # fmt: skip
        if self.voters is None:
            cmd.append("--standalone")
        if self.secure:
            cmd += self.material.scram_users()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def start(self, timeout: float = 90.0, cluster_id: str | None = None) -> tuple[BrokerStatus, bool]:
        """Start the broker unless one already answers on the port. Returns (status, started)."""
        proc = self.launch(cluster_id)
        if proc is None:
            return self.status(), False
        self.wait_ready(proc, timeout)
        return self.status(), True

    def launch(self, cluster_id: str | None = None) -> subprocess.Popen[bytes] | None:
        """Start the broker's process, without waiting for it to serve (a cluster's nodes wait for
        each other); None when one already answers on the port."""
        current = self.status()
        if current.running:
            return None
        if current.pid is not None:
            raise BrokerError(
                f"a broker process (pid {current.pid}) exists for {self.data_dir} but does not "
                f"listen on {self.port}; run `choreo kafka stop` first"
            )
        if port_open("127.0.0.1", self.controller_port):
            raise BrokerError(f"port {self.controller_port} (controller) is already in use")
        java = _require_java()
        jars = ensure_jars(self.cache_dir)
        classpath = f"{jars}/*"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.secure:
            if (self.data_dir / "logs" / "meta.properties").exists() and not self.material.directory.exists():
                raise BrokerError(
                    f"{self.data_dir} holds a plaintext broker's data: "
                    "`choreo kafka wipe` it, or use another --data-dir"
                )
            ensure_material(self.material.directory, os.environ.get("CHOREO_KAFKA_PASSWORD"))
        crashed = self._crashed()
        self._write_properties()
        self._format(java, classpath, cluster_id)
        if crashed and self.voters is None:
            self._fence_crashed_registration(java, classpath)
        proc = self._java(java, classpath, self.props_file, self.heap)
        self.pid_file.write_text(str(proc.pid))
        return proc

    def _java(self, java: str, classpath: str, props: Path, heap: str) -> subprocess.Popen[bytes]:
        cmd = [
            java, f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}", f"-Dchoreo.broker.log={self.log_file}",
            "-cp", classpath, "kafka.Kafka", str(props),
        ]  # fmt: skip
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def _crashed(self) -> bool:
        """This node ran, and its broker did not shut down cleanly (Kafka writes the marker on a
        clean shutdown and deletes it on start)."""
        logs = self.data_dir / "logs"
        return (logs / "recovery-point-offset-checkpoint").exists() and not (logs / ".kafka_cleanshutdown").exists()

    def _fence_crashed_registration(self, java: str, classpath: str, timeout: float = 60.0) -> None:
        """After a crash, the metadata log still registers the dead broker as live and as the
        leader of every partition. Started as is, the new broker loads its transaction
        coordinator on that stale view, and the coordinator starts writing the markers of the
        transactions the crash left half-committed; then the controller times the old
        registration out (9 s), every partition is without a leader for a moment, and the
        coordinator takes the leaderless partitions for deleted ones: it skips their markers and
        completes the transactions without them. Those partitions then hold open transactions no
        coordinator tracks, and every read_committed reader stops there for good.

        So a crashed single node first runs as a controller alone, with a 1 s broker session, until
        its controller has fenced the old registration (all leaders are unknown, in the log); the
        broker then starts on that view and loads its coordinator only once it leads again."""
        props = self.data_dir / "controller-only.properties"
        entries = {
            "process.roles": "controller",
            "node.id": str(self.node_id),
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "broker.session.timeout.ms": "1000",
            "broker.heartbeat.interval.ms": "500",
        }
        props.write_text("".join(f"{k}={v}\n" for k, v in entries.items()))
        start = self.log_file.stat().st_size if self.log_file.exists() else 0
        proc = self._java(java, classpath, props, "256m")
        fenced = re.compile(rf"BrokerRegistrationChangeRecord\(brokerId={self.node_id}, brokerEpoch=\d+, fenced=1,")
        try:
            deadline, active = time.monotonic() + timeout, -1
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise BrokerError(f"the controller exited with code {proc.returncode}; see {self.log_file}")
                with open(self.log_file, "rb") as log:
                    if os.fstat(log.fileno()).st_size < start:  # the log rolled over
                        start, active = 0, min(active, 0)
                    log.seek(start)
                    text = log.read().decode(errors="replace")
                if active < 0 and (active := text.find("Activated periodic tasks")) >= 0:
                    deadline = time.monotonic() + 10  # the fence comes about 1 s after activation
                if active >= 0 and fenced.search(text, active):
                    return
                time.sleep(0.2)
            if active < 0:
                raise BrokerError(f"the controller did not become active within {timeout:.0f}s; see {self.log_file}")
            # no fence: the crash came before the broker was registered as live, nothing to fence
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the broker exited with code {proc.returncode}; see {self.log_file}")
            if port_open("127.0.0.1", self.port) and _metadata_ok(self.client_config()):
                return
            time.sleep(0.3)
        raise BrokerError(f"the broker on port {self.port} did not accept connections within {timeout:.0f}s")

    # ---- stop -------------------------------------------------------------------

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop a broker started by choreo. Returns False when none was running."""
        pid = self.signal_stop()
        if pid is not None:
            self.wait_stopped(pid, timeout)
        return pid is not None

    def signal_stop(self) -> int | None:
        """Ask the broker started by choreo to shut down (SIGTERM); its pid, None when none runs."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        os.kill(pid, signal.SIGTERM)
        return pid

    def wait_stopped(self, pid: int, timeout: float) -> None:
        """Wait for the broker to exit; past `timeout`, kill it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pid() is None or _is_zombie(pid):
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def wipe(self) -> None:
        """Delete the broker's data directory (it must be stopped)."""
        if self._pid() is not None:
            raise BrokerError("stop the broker before wiping its data")
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass(frozen=True)
class ClusterStatus:
    brokers: list[BrokerStatus]
    controller: int | None
    """The node id of the active controller (None when no quorum answers)."""
    under_replicated: int
    """Partitions with fewer in-sync replicas than replicas."""

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)


class LocalCluster:
    """`brokers` KRaft nodes on 127.0.0.1, each a broker and a controller: node N listens on
    port + 2(N-1) and its controller on the port after; the controller quorum is every node (3
    voters survive the loss of one). Each node has its own data dir under the cluster's."""

    def __init__(self, brokers: int = 3, port: int = 9092, data_dir: Path | None = None, heap: str = "512m") -> None:
        if not 1 <= brokers <= 9:
            raise BrokerError(f"a local cluster runs 1 to 9 brokers, not {brokers}")
        self.data_dir = (data_dir or default_cache_dir() / f"kafka-cluster-{port}").resolve()
        ports = [port + 2 * i for i in range(brokers)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{p + 1}" for i, p in enumerate(ports))
        self.nodes = [
            LocalBroker(p, self.data_dir / f"node-{i + 1}", heap=heap, node_id=i + 1, voters=voters)
            for i, p in enumerate(ports)
        ]
        self.id_file = self.data_dir / "cluster.id"

    def node(self, n: int) -> LocalBroker:
        if not 1 <= n <= len(self.nodes):
            raise BrokerError(f"broker {n} is not one of this cluster's 1..{len(self.nodes)}")
        return self.nodes[n - 1]

    def start(self, only: int | None = None, timeout: float = 120.0) -> list[int]:
        """Start every node (or node `only`) that does not run; returns the node ids started."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.id_file.exists():
            self.id_file.write_text(_kafka_uuid())
        cluster_id = self.id_file.read_text().strip()
        chosen = [self.node(only)] if only is not None else self.nodes
        launched = [(node, node.launch(cluster_id)) for node in chosen]
        for node, proc in launched:
            if proc is not None:
                node.wait_ready(proc, timeout)
        return [node.node_id for node, proc in launched if proc is not None]

    def stop(self, only: int | None = None, timeout: float = 60.0) -> list[int]:
        """Stop every node (or node `only`); returns the node ids stopped. All are asked at once:
        nodes stopped one by one would lose their controller quorum and could not shut down cleanly."""
        chosen = [self.node(only)] if only is not None else self.nodes
        asked = [(node, node.signal_stop()) for node in chosen]
        for node, pid in asked:
            if pid is not None:
                node.wait_stopped(pid, timeout)
        return [node.node_id for node, pid in asked if pid is not None]

    def status(self) -> ClusterStatus:
        brokers = [node.status() for node in self.nodes]
        up = [b.bootstrap for b in brokers if b.running]
        controller, under = None, 0
        if up:
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({"bootstrap.servers": ",".join(up), "log_level": 0})
            with contextlib.suppress(Exception):  # no quorum, or one being elected: unknown
                controller = admin.describe_cluster(request_timeout=5).result().controller.id
            with contextlib.suppress(Exception):
                topics = admin.list_topics(timeout=5).topics.values()
                under = sum(len(p.isrs) < len(p.replicas) for t in topics for p in t.partitions.values())
        return ClusterStatus(brokers, controller, under)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return False


def _kafka_uuid() -> str:
    """A cluster id as kafka-storage random-uuid makes one: base64url without padding, drawn again
    when it starts with '-' (the storage tool would take it for an option, as Kafka's Uuid does)."""
    import base64

    while True:
        drawn = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not drawn.startswith("-"):
            return drawn


def _metadata_ok(client: dict[str, Any]) -> bool:
    from confluent_kafka.admin import AdminClient

    from events.log.kafka_io import admin_config

    try:
        admin = AdminClient(admin_config(client))
        return len(admin.list_topics(timeout=2).brokers) > 0
    except Exception:
        return False
