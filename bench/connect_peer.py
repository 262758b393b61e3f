"""The Kafka Connect peer: a standalone Connect worker, an HTTP sink connector from Maven Central.

What a team that prefers configuration to code would run: ``ConnectStandalone`` (Apache Kafka's
``connect-runtime``) with clescot's HTTP sink connector (``io.github.clescot:
kafka-connect-http-connectors``, okhttp), one task per partition, posting each order to the
sandbox's ``POST /v1/order`` with Basic auth. The bench's records are plain Avro (no registry), and
no converter on Central reads those, nor does a built-in transform turn decimals into cents; so the
value converter is ours, ``bench/connect/src/.../ButtonBodyConverter.java``: it builds the same
body as ``bench/forward_body.py``, and the sink's JEXL request mapper posts it as it is.

``prepare()`` builds and caches it all under ``.cache/bench-connect/`` (Maven: ``package`` and
``dependency:build-classpath`` on ``bench/connect/pom.xml``, keyed by the POM's and the source's
hash; the connector's zip by maven-dependency-plugin 2.8's ``copy``, the file alone: its parent
POM and the Confluent jars its POM names are not on Central). ``command()`` writes one run's
worker and connector properties and returns the JVM's command line. The sink task's consumer
group is ``connect-<name>``; offsets are committed every second (``offset.flush.interval.ms``).
"""

from __future__ import annotations

import base64
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from consumer.devtools._proc import (
    cache_dir,
    file_lock,
    repo_root,
    require_tool,
    run_maven,
    sha256_of,
)

ROOT = repo_root()
POM = ROOT / "bench" / "connect" / "pom.xml"
SOURCES = sorted(p for p in (ROOT / "bench" / "connect" / "src").rglob("*") if p.is_file())
SCHEMA = ROOT / "schemas" / "commerce_event.avsc"
CONNECTOR = "io.github.clescot:kafka-connect-http-connectors:0.8.84:zip"
CONNECTOR_CLASS = "io.github.clescot.kafka.connect.http.sink.HttpSinkConnector"
CONVERTER_CLASS = "bench.connect.ButtonBodyConverter"


@dataclass(frozen=True)
class Prepared:
    """The worker's classpath (ours included) and the plugin directory holding the sink."""

    java: str
    classpath: str
    plugins: Path


def prepare() -> Prepared:
    """Build the converter, resolve the worker's classpath and unpack the connector (cached).

    Raises ``ToolError`` with Maven's output when a step fails (no network, an artifact missing).
    """
    java = require_tool("java")
    cache = cache_dir("bench-connect")
    key = sha256_of(POM, *SOURCES)[:16]
    cached = cache / f"classpath-{key}.txt"
    plugins = cache / "plugins"
    with file_lock(cache / ".lock"):
        if not _usable(cached):
            partial = cached.with_suffix(f".{os.getpid()}.partial")
            run_maven(
                [
                    "package",
                    "dependency:build-classpath",
                    "-DincludeScope=runtime",
                    f"-Dmdep.outputFile={partial}",
                ],
                pom=POM,
            )
            jar = cache / "build" / "bench-connect-0.jar"
            partial.write_text(f"{jar}{os.pathsep}{partial.read_text().strip()}")
            partial.replace(cached)
        name = CONNECTOR.split(":")[1] + "-" + CONNECTOR.split(":")[2]
        if not (plugins / name).is_dir():
            download = cache / "download"
            run_maven(
                [
                    # 3.x reads the artifact's descriptor and fails on its parent POM (not on
                    # Central); 2.8 copies the file alone.
                    "org.apache.maven.plugins:maven-dependency-plugin:2.8:copy",
                    f"-Dartifact={CONNECTOR}",
                    f"-DoutputDirectory={download}",
                ],
                pom=POM,
            )
            with zipfile.ZipFile(download / f"{name}.zip") as archive:
                archive.extractall(plugins / f"{name}.partial")
            (plugins / f"{name}.partial").replace(plugins / name)
    return Prepared(java, cached.read_text().strip(), plugins)


def _usable(path: Path) -> bool:
    try:
        jars = path.read_text().strip().split(os.pathsep)
    except OSError:
        return False
    return all(Path(jar).is_file() for jar in jars)


def command(
    prepared: Prepared,
    work: Path,
    *,
    bootstrap: str,
    topic: str,
    name: str,
    base_url: str,
    api_key: str,
    tasks: int,
    in_flight: int,
) -> list[str]:
    """Write ``work/<name>-{worker,connector}.properties``; the JVM's command line.

    ``tasks`` sink tasks (one per partition), each with its own okhttp client allowing
    ``in_flight / tasks`` requests at once (rounded up), so about ``in_flight`` in all. The sink
    task's consumer group is ``connect-<name>``.
    """
    per_task = str(-(-in_flight // tasks))
    worker = work / f"{name}-worker.properties"
    connector = work / f"{name}-connector.properties"
    auth = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
    headers = {
        "Authorization": auth,
        "Content-Type": "application/json",
        "X-Button-API-Version": "2019-01-01",
    }
    static = "config.default.enrich.request.static.header."
    worker.write_text(
        _properties(
            {
                "bootstrap.servers": bootstrap,
                "key.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
                "value.converter": CONVERTER_CLASS,
                "value.converter.schema.path": str(SCHEMA),
                "offset.storage.file.filename": str(work / f"{name}.offsets"),
                "offset.flush.interval.ms": "1000",
                "plugin.path": str(prepared.plugins),
                # Find plugins by their ServiceLoader manifests instead of scanning every jar:
                # the JVM starts in a few seconds less.
                "plugin.discovery": "service_load",
                "listeners": "http://127.0.0.1:0",
                "consumer.auto.offset.reset": "earliest",
            }
        )
    )
    connector.write_text(
        _properties(
            {
                "name": name,
                "connector.class": CONNECTOR_CLASS,
                "tasks.max": str(tasks),
                "topics": topic,
                "http.request.mapper.default.mode": "JEXL",
                "http.request.mapper.default.url": f"'{base_url}/v1/order'",
                "http.request.mapper.default.method": "'POST'",
                "http.request.mapper.default.body": "sinkRecord.value()",
                "httpclient.async.fixed.thread.pool.size": per_task,
                "config.default.okhttp.dispatcher.max.requests": per_task,
                "config.default.okhttp.dispatcher.max.requests.per.host": per_task,
                f"{static}names": ",".join(headers),
                **{static + header: value for header, value in headers.items()},
            }
        )
    )
    return [
        prepared.java,
        "-Xmx512m",
        # The zip leaves out Confluent's serializer jars (not on Central). Only the sink's
        # publish.mode=PRODUCER uses them, but the verifier resolves them when the class that
        # names them loads, and the task fails to start; with publish.mode NONE nothing calls them.
        "-XX:+UnlockDiagnosticVMOptions",
        "-XX:-BytecodeVerificationRemote",
        "-Djava.awt.headless=true",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp",
        prepared.classpath,
        "org.apache.kafka.connect.cli.ConnectStandalone",
        str(worker),
        str(connector),
    ]


def _properties(values: dict[str, str]) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\:")

    return "".join(f"{key}={escape(value)}\n" for key, value in values.items())
