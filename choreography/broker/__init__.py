"""A real single-node Apache Kafka broker (KRaft), run from Maven Central jars for local use and CI."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

POM = Path(__file__).with_name("pom.xml")


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
    """Fetch the broker jars with Maven once, into a cache outside the repository."""
    jars = (cache_dir or default_cache_dir()) / f"kafka-{kafka_version()}" / "jars"
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
    ) -> None:
        self.port = port
        self.controller_port = port + 1
        self.data_dir = (data_dir or default_data_dir(port)).resolve()
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
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": (f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(logs),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "message.max.bytes": "16777216",
            "log.retention.hours": "-1",
        }
        self.props_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format(self, java: str, classpath: str) -> None:
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        cluster_id = _kafka_uuid()
        cmd = [
            java, "-cp", classpath, "kafka.tools.StorageTool", "format",
            "-t", cluster_id, "-c", str(self.props_file), "--standalone",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def start(self, timeout: float = 90.0) -> tuple[BrokerStatus, bool]:
        """Start the broker unless one already answers on the port. Returns (status, started)."""
        current = self.status()
        if current.running:
            return current, False
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
        self._write_properties()
        self._format(java, classpath)
        cmd = [
            java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", "-cp", classpath, "kafka.Kafka", str(self.props_file),
        ]  # fmt: skip
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the broker exited with code {proc.returncode}; see {self.log_file}")
            if port_open("127.0.0.1", self.port) and _metadata_ok(self.port):
                return self.status(), True
            time.sleep(0.3)
        raise BrokerError(f"the broker did not accept connections within {timeout:.0f}s")

    # ---- stop -------------------------------------------------------------------

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop a broker started by choreo. Returns False when none was running."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pid() is None or _is_zombie(pid):
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wipe(self) -> None:
        """Delete the broker's data directory (it must be stopped)."""
        if self._pid() is not None:
            raise BrokerError("stop the broker before wiping its data")
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return False


def _kafka_uuid() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _metadata_ok(port: int) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
        return len(admin.list_topics(timeout=2).brokers) > 0
    except Exception:
        return False
