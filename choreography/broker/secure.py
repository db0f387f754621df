"""TLS and SCRAM for the local broker (`choreo kafka start --secure`): a throwaway CA and a broker
certificate made with the JDK's keytool, a SCRAM-SHA-512 user for clients and one for the broker
itself, created with Kafka's own storage tool when the broker's storage is formatted.

Everything lives under `<data dir>/secure`, readable by its owner only:

- `ca.pem`: the CA's certificate, for clients (`ssl.ca.location`);
- `broker.p12`, `truststore.p12`: the broker's key and certificate, and the CA it trusts;
- `client-password`: the password of the SCRAM user `choreo` (taken from CHOREO_KAFKA_PASSWORD at
  the first start when set, else random); clients reference it as `${file:...}`;
- `store-password`, `broker-password`: the keystores' and the broker's own SCRAM password."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

USER = "choreo"
BROKER_USER = "choreo-broker"
MECHANISM = "SCRAM-SHA-512"
VALID_DAYS = "365"


class MaterialError(RuntimeError):
    """The CA, the certificates or the passwords could not be made; the message says why."""


@dataclass(frozen=True)
class SecureMaterial:
    directory: Path

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.p12"

    @property
    def truststore(self) -> Path:
        return self.directory / "truststore.p12"

    @property
    def client_password_file(self) -> Path:
        return self.directory / "client-password"

    def _secret(self, name: str) -> str:
        return (self.directory / name).read_text().strip()

    def client_security(self) -> dict[str, str]:
        """librdkafka properties of a client of this broker; the password by reference."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": USER,
            "sasl.password": f"${{file:{self.client_password_file}}}",
            "ssl.ca.location": str(self.ca_pem),
        }

    def broker_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """server.properties entries of a broker serving SASL_SSL on `port` (the controller
        listener stays plaintext on 127.0.0.1)."""
        store = self._secret("store-password")
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{self._secret("broker-password")}";'
        )
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": store,
            "ssl.key.password": store,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(self.truststore),
            "ssl.truststore.password": store,
        }

    def scram_users(self) -> list[str]:
        """The storage tool's arguments that create the SCRAM users when storage is formatted."""
        return [
            arg
            for user, secret in ((USER, "client-password"), (BROKER_USER, "broker-password"))
            for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={self._secret(secret)}]")
        ]


def ensure_material(directory: Path, client_password: str | None = None) -> SecureMaterial:
    """Make the CA, the broker's certificate and the passwords once; later calls reuse them."""
    material = SecureMaterial(directory)
    if material.truststore.exists():
        return material
    keytool = shutil.which("keytool")
    if keytool is None:
        raise MaterialError("'keytool' was not found on PATH; it comes with the Java runtime (JDK 17+)")
    shutil.rmtree(directory, ignore_errors=True)  # what an interrupted first start left
    directory.mkdir(parents=True, mode=0o700)
    if client_password is not None and any(c in client_password for c in ",[]=\n"):
        raise MaterialError("CHOREO_KAFKA_PASSWORD may not contain ',', '[', ']', '=' or a newline")
    for name, value in (
        ("client-password", client_password or secrets.token_urlsafe(24)),
        ("broker-password", secrets.token_urlsafe(24)),
        ("store-password", secrets.token_urlsafe(24)),
    ):
        _write_private(directory / name, value)
    store = material._secret("store-password")
    ca, csr, signed = directory / "ca.p12", directory / "broker.csr", directory / "broker.pem"
    common = ["-storetype", "PKCS12", "-storepass", store, "-noprompt"]
    steps = [
        ["-genkeypair", "-alias", "ca", "-keystore", ca, "-keyalg", "RSA", "-keysize", "2048",
         "-dname", "CN=choreo local CA", "-ext", "bc:c", "-validity", VALID_DAYS],
        ["-exportcert", "-rfc", "-alias", "ca", "-keystore", ca, "-file", material.ca_pem],
        ["-genkeypair", "-alias", "broker", "-keystore", material.keystore, "-keyalg", "RSA", "-keysize", "2048",
         "-dname", "CN=localhost", "-validity", VALID_DAYS],
        ["-certreq", "-alias", "broker", "-keystore", material.keystore, "-file", csr],
        ["-gencert", "-rfc", "-alias", "ca", "-keystore", ca, "-infile", csr, "-outfile", signed,
         "-ext", "SAN=dns:localhost,ip:127.0.0.1", "-validity", VALID_DAYS],
        ["-importcert", "-alias", "ca", "-keystore", material.keystore, "-file", material.ca_pem],
        ["-importcert", "-alias", "broker", "-keystore", material.keystore, "-file", signed],
        ["-importcert", "-alias", "ca", "-keystore", material.truststore, "-file", material.ca_pem],
    ]  # fmt: skip
    for step in steps:
        proc = subprocess.run([keytool, *map(str, step), *common], capture_output=True, text=True)
        if proc.returncode != 0:
            raise MaterialError(f"keytool {step[0]} failed: {(proc.stdout + proc.stderr).strip()[-500:]}")
    for leftover in (csr, signed):
        leftover.unlink()
    return material


def _write_private(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
