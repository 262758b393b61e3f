"""The quixstreams peers, run with the bench's own quixstreams virtualenv (see bench/README.md).

quixstreams pins an older confluent-kafka than the project, so this file imports nothing of the
project but ``bench.forward_body`` (standard library only) and runs under
``.cache/bench-quix/bin/python``. The job: consume the Avro topic (``AvroDeserializer``, plain
Avro), build Button's create body, and post it from a ``BatchingSink`` with aiohttp at
``--in-flight`` requests at once; a checkpoint (every second) flushes the sink, then commits.
``--stateful`` also keeps per-user state (the user's orders) in quixstreams' RocksDB store with
its changelog topic, the same work the service's profiles do. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import aiohttp
from quixstreams import Application, State
from quixstreams.models.serializers.avro import AvroDeserializer
from quixstreams.sinks import BatchingSink, SinkBatch

from bench.forward_body import body_from_record

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "commerce_event.avsc"


class ButtonSink(BatchingSink):  # type: ignore[misc]
    """Posts each batch's bodies with aiohttp, ``in_flight`` at once, on its own event loop."""

    def __init__(self, base_url: str, api_key: str, in_flight: int) -> None:
        super().__init__()
        self._base_url = base_url
        self._auth = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
        self._in_flight = in_flight
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None

    def setup(self) -> None:
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

        async def open_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                self._base_url,
                connector=aiohttp.TCPConnector(limit=self._in_flight),
                headers={
                    "Authorization": self._auth,
                    "Content-Type": "application/json",
                    "X-Button-API-Version": "2019-01-01",
                },
            )

        self._session = asyncio.run_coroutine_threadsafe(open_session(), self._loop).result()

    async def _post_all(self, bodies: list[bytes]) -> None:
        session = self._session
        assert session is not None
        items = iter(bodies)

        async def worker() -> None:
            for body in items:
                async with session.post("/v1/order", data=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")

        await asyncio.gather(*(worker() for _ in range(self._in_flight)))

    def write(self, batch: SinkBatch) -> None:
        bodies = [json.dumps(item.value).encode() for item in batch]
        asyncio.run_coroutine_threadsafe(self._post_all(bodies), self._loop).result()


def remember(body: dict[str, Any], state: State) -> dict[str, Any]:
    """The stateful step: keep the user's orders (newest 100) in the store."""
    orders = state.get("orders", [])
    orders = [*orders[-99:], {"order_id": body["order_id"], "total": body["total"]}]
    state.set("orders", orders)
    return body


def main() -> int:
    parser = argparse.ArgumentParser(prog="quix_peer", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--stateful", action="store_true")
    args = parser.parse_args()
    schema = json.loads(SCHEMA.read_text())
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            commit_interval=1.0,
            state_dir=state_dir,
            use_changelog_topics=args.stateful,
            loglevel="WARNING",
        )
        topic = app.topic(args.topic, value_deserializer=AvroDeserializer(schema=schema))
        sdf = app.dataframe(topic)
        sdf = sdf.apply(body_from_record).filter(lambda body: body is not None)
        if args.stateful:
            sdf = sdf.apply(remember, stateful=True)
        sdf.sink(ButtonSink(args.base_url, args.api_key, args.in_flight))
        app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
