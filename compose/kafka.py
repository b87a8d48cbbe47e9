"""A local single-node Apache Kafka broker (KRaft, broker+controller in one JVM).

The official broker jars come from Maven Central through `pom.xml` beside this
file and are cached in the user's cache directory, so a second `stack up`
needs no network. Only processes this module started are ever stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from assetlog.compose.kafka_ready import kafka_available, say_still_starting, wait_until_kafka_ready
from assetlog.compose.processes import (
    StackError,
    free_port,
    port_is_free,
    process_alive,
    read_pid,
    stop_process_group,
    tail,
)
from assetlog.compose.security import KAFKA_ADMIN_USER, KAFKA_CLIENT_USER, SCRAM_MECHANISM, SecurityMaterial
from assetlog.config import cache_home

KAFKA_VERSION_PATTERN = re.compile(r"<kafka\.version>([^<]+)</kafka\.version>")
PORT_RELEASE_SECONDS = 10.0  # a broker stopped a moment ago may still hold its ports
MANY_PARTITIONS = 1000  # named in the error: loading this many is what makes a start slow
PARTITION_FOLDER = re.compile(r"-\d+$")  # `<topic>-<partition>`; metadata folders end otherwise


def _pom_text() -> str:
    return resources.files("assetlog.compose").joinpath("pom.xml").read_text(encoding="utf-8")


def kafka_version() -> str:
    match = KAFKA_VERSION_PATTERN.search(_pom_text())
    if not match:
        raise StackError("compose/pom.xml has no <kafka.version>: the package is damaged; reinstall assetlog")
    return match.group(1)


def jars_dir() -> Path:
    return cache_home() / f"kafka-{kafka_version()}" / "libs"


def check_java() -> str:
    java = shutil.which("java")
    if not java:
        raise StackError("Java is not installed: install a JDK 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < 17:
        raise StackError(f"Kafka 4 needs Java 17 or newer, found {out.splitlines()[0] if out else 'unknown'}: install openjdk-17")
    return java


def fetch_jars() -> tuple[Path, bool]:
    """Resolve the broker jars with Maven into the cache; returns (folder, fetched_now)."""
    target = jars_dir()
    marker = target / ".complete"
    if marker.exists():
        return target, False
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven is not installed: install it (`apt-get install maven`) so the Kafka jars can be fetched")
    target.parent.mkdir(parents=True, exist_ok=True)
    pom = target.parent / "pom.xml"
    pom.write_text(_pom_text(), encoding="utf-8")
    staging = target.parent / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        detail = next((ln for ln in (result.stdout + result.stderr).splitlines() if "ERROR" in ln), "no jars were copied")
        raise StackError(f"Maven could not fetch the Kafka {kafka_version()} jars ({detail.strip()[:300]}); "
                         "check access to Maven Central or a mirror in ~/.m2/settings.xml")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    marker.write_text(kafka_version(), encoding="utf-8")
    return target, True


@dataclass
class KafkaBroker:
    """The broker's files under one state folder: config, data, log, pid and ports.

    With `security` the client listener is SASL_SSL (SCRAM-SHA-512 users made
    by Kafka's own storage tool); the controller listener stays plaintext on
    127.0.0.1, reachable only from this machine.
    """

    home: Path
    security: SecurityMaterial | None = None

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def ports_file(self) -> Path:
        return self.home / "ports"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def ports(self) -> tuple[int, int] | None:
        try:
            broker, controller = self.ports_file.read_text().split()
            return int(broker), int(controller)
        except (OSError, ValueError):
            return None

    def bootstrap(self) -> str | None:
        ports = self.ports()
        return f"127.0.0.1:{ports[0]}" if ports else None

    def running_pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid and process_alive(pid, "kafka.Kafka") else None

    def client_config(self) -> dict[str, str]:
        """librdkafka settings this broker's clients need beyond the bootstrap servers."""
        return self.security.librdkafka_settings() if self.security else {}

    def _listener_lines(self, broker_port: int, controller_port: int) -> list[str]:
        if self.security is None:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        material = self.security
        keystore = self.home / "keystore.pem"  # PEM keystore: the private key, then the certificate
        keystore.write_bytes(material.server_key_file.read_bytes() + material.server_cert_file.read_bytes())
        os.chmod(keystore, 0o600)
        admin_password = material.passwords()["kafka_admin"]
        return [
            f"listeners=SASL_SSL://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{broker_port}",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=SASL_SSL",
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{KAFKA_ADMIN_USER}" password="{admin_password}";',
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={material.ca_file}",
        ]

    def _scram_users(self) -> list[str]:
        """`--add-scram` arguments of Kafka's storage tool: the users exist before the first start."""
        if self.security is None:
            return []
        passwords = self.security.passwords()
        users = ((KAFKA_ADMIN_USER, passwords["kafka_admin"]), (KAFKA_CLIENT_USER, passwords["kafka_client"]))
        return [argument for name, password in users
                for argument in ("--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]")]

    def _write_config(self, broker_port: int, controller_port: int) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
                *self._listener_lines(broker_port, controller_port),
                "controller.listener.names=CONTROLLER",
                f"log.dirs={self.data_dir}",
                "num.partitions=3",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=3",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # One JVM is broker and controller on a small shared machine: a stall of a few seconds
                # under load must not get the broker fenced ("All brokers are currently fenced").
                "broker.session.timeout.ms=30000",
                "log.retention.hours=-1",
                "",
            ]),
            encoding="utf-8",
        )
        log_config = self.home / "log4j2.properties"
        log_config.write_text(
            "\n".join([
                "status = error",
                # Rolled at 64 MB, two old files kept: one log that only grew reached hundreds of MB.
                "appender.file.type = RollingFile",
                "appender.file.name = FILE",
                f"appender.file.fileName = {self.server_log}",
                f"appender.file.filePattern = {self.home / 'server.log.%i'}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "appender.file.policies.type = Policies",
                "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                "appender.file.policies.size.size = 64MB",
                "appender.file.strategy.type = DefaultRolloverStrategy",
                "appender.file.strategy.max = 2",
                "rootLogger.level = WARN",
                "rootLogger.appenderRef.file.ref = FILE",
                "logger.kafka.name = kafka",
                "logger.kafka.level = INFO",
                "",
            ]),
            encoding="utf-8",
        )
        return config

    def start(self) -> dict[str, object]:
        """Start the broker unless ours already runs; returns what happened."""
        started = time.monotonic()
        pid = self.running_pid()
        if pid:
            return {"bootstrap": self.bootstrap(), "pid": pid, "reused": True, "seconds": 0.0}
        if self.pid_file.exists():
            self.pid_file.unlink()  # stale: the process it names is gone
        java = check_java()
        libs, fetched = fetch_jars()
        ports = self.ports()
        if ports:
            for port in ports:
                if not port_is_free(port, wait_seconds=PORT_RELEASE_SECONDS):
                    raise StackError(
                        f"port {port} that the local Kafka uses is taken by another process: stop it, "
                        f"or run `assetlog stack down --purge` to start afresh on new ports"
                    )
        else:
            ports = (free_port(), free_port())
            self.home.mkdir(parents=True, exist_ok=True)
            self.ports_file.write_text(f"{ports[0]} {ports[1]}\n")
        config = self._write_config(*ports)
        classpath = f"{libs}/*"
        jvm = [java, "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
               "-cp", classpath]
        if not (self.data_dir / "meta.properties").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", str(uuid.uuid4().hex[:22]),
                 "-c", str(config), "--standalone", *self._scram_users()],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise StackError(f"formatting Kafka storage failed: {tail(fmt.stdout + fmt.stderr, 3)}")
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        bootstrap = f"127.0.0.1:{ports[0]}"
        partitions = self.partition_count()
        try:
            wait_until_kafka_ready(bootstrap, process, client_config=self.client_config(),
                                   progress=self._log_size, note=say_still_starting(partitions))
        except StackError as exc:
            stop_process_group(process.pid)
            self.pid_file.unlink(missing_ok=True)
            if partitions >= MANY_PARTITIONS:
                raise StackError(f"{exc}; its data holds {partitions} partitions, which take long to load: "
                                 "delete topics you no longer need, or `assetlog stack down --purge` "
                                 "to start afresh") from None
            raise
        return {"bootstrap": bootstrap, "pid": process.pid, "reused": False, "jars_fetched": fetched,
                "seconds": round(time.monotonic() - started, 2)}

    @property
    def server_log(self) -> Path:
        return self.home / "server.log"

    def partition_count(self) -> int:
        """Partition folders in the data directory: what a start must load before it answers."""
        try:
            return sum(1 for entry in os.scandir(self.data_dir)
                       if entry.is_dir() and PARTITION_FOLDER.search(entry.name))
        except OSError:
            return 0

    def _log_size(self) -> int:
        """Grows while the broker works through its start-up (a line per partition it loads)."""
        total = 0
        for path in (self.server_log, self.log_file):
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def stop(self) -> bool:
        pid = self.running_pid()
        self.pid_file.unlink(missing_ok=True)
        if not pid:
            return False
        stop_process_group(pid, grace_seconds=30)
        return True

    def kill(self) -> None:
        """SIGKILL the broker (fault drills): no clean shutdown."""
        pid = self.running_pid()
        if pid:
            stop_process_group(pid, grace_seconds=0)


__all__ = ["KafkaBroker", "fetch_jars", "kafka_available", "kafka_version", "wait_until_kafka_ready"]
