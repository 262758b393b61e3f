"""The Kafka Connect peer's configuration (``bench.connect_peer.command``): no JVM is started.

The peer itself runs in the bench, checked at the sandbox like every other (bench/README.md).
"""

from __future__ import annotations

import base64
from pathlib import Path

from bench import connect_peer


def _read(path: Path) -> dict[str, str]:
    """Java properties as ``command`` writes them: ``key=value``, ``\\:`` for a colon."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line)
    return {key: value.replace("\\:", ":").replace("\\\\", "\\") for key, value in pairs}


def test_the_worker_posts_each_body_with_basic_auth_and_the_in_flight_split_over_tasks(
    tmp_path: Path,
) -> None:
    prepared = connect_peer.Prepared("java", "a.jar:b.jar", tmp_path / "plugins")
    cmd = connect_peer.command(
        prepared,
        tmp_path,
        bootstrap="127.0.0.1:9092",
        topic="orders",
        name="peer",
        base_url="http://127.0.0.1:8089",
        api_key="sk-bench",
        tasks=3,
        in_flight=64,
    )

    worker = _read(tmp_path / "peer-worker.properties")
    connector = _read(tmp_path / "peer-connector.properties")
    assert cmd[-3:] == [
        "org.apache.kafka.connect.cli.ConnectStandalone",
        str(tmp_path / "peer-worker.properties"),
        str(tmp_path / "peer-connector.properties"),
    ]
    assert cmd[cmd.index("-cp") + 1] == "a.jar:b.jar"
    assert worker["bootstrap.servers"] == "127.0.0.1:9092"
    assert worker["value.converter"] == "bench.connect.ButtonBodyConverter"
    assert Path(worker["value.converter.schema.path"]).is_file()
    assert worker["offset.flush.interval.ms"] == "1000"
    assert worker["plugin.path"] == str(tmp_path / "plugins")
    assert connector["topics"] == "orders"
    assert connector["tasks.max"] == "3"
    assert connector["http.request.mapper.default.url"] == "'http://127.0.0.1:8089/v1/order'"
    assert connector["http.request.mapper.default.body"] == "sinkRecord.value()"
    static = "config.default.enrich.request.static.header."
    auth = connector[static + "Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"sk-bench:"
    assert connector[static + "names"] == "Authorization,Content-Type,X-Button-API-Version"
    assert connector["config.default.okhttp.dispatcher.max.requests.per.host"] == "22"
    assert connector["httpclient.async.fixed.thread.pool.size"] == "22"
