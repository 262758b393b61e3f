"""The yardsticks that run in the project's virtualenv, each as its own process.

``python -m bench.peers KIND ...`` prints one JSON line: ``count``, ``seconds`` (timed inside
the process, from its first Kafka or HTTP call to its last) and ``cpu_s`` (the process's CPU).

- ``http``: the HTTP ceiling: bare aiohttp posting the service's own create bodies (a JSONL
  file) to the sandbox, ``--in-flight`` at once. No Kafka, no decoding: what Button allows.
- ``decode``: the decode ceiling: consume the topic and ``fastavro.schemaless_reader`` each
  value, nothing else.
- ``naive``: the loop a user writes first: poll, decode, build the body, one blocking POST per
  record (``http.client``, keep-alive), auto-commit; stops after ``--limit`` records.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import json
import resource
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, cast

import aiohttp
import fastavro
from confluent_kafka import Consumer

from bench.forward_body import body_from_record

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "commerce_event.avsc"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _auth(api_key: str) -> str:
    return "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-peer-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
        }
    )


async def _http(base_url: str, api_key: str, bodies: list[bytes], in_flight: int) -> None:
    headers = {
        "Authorization": _auth(api_key),
        "Content-Type": "application/json",
        "X-Button-API-Version": "2019-01-01",
    }
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as session:

        async def worker() -> None:
            for body in queue:
                async with session.post("/v1/order", data=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")

        await asyncio.gather(*(worker() for _ in range(in_flight)))


def http_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    bodies = [line.encode() for line in Path(args.bodies).read_text().splitlines() if line]
    start = time.perf_counter()
    asyncio.run(_http(args.base_url, args.api_key, bodies, args.in_flight))
    return {"count": len(bodies), "seconds": time.perf_counter() - start}


def decode_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))
    consumer = _consumer(args.bootstrap)
    consumer.subscribe([args.topic])
    count = 0
    start = time.perf_counter()
    deadline = time.monotonic() + args.timeout
    while count < args.count and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=500, timeout=0.5):
            if message.error() is None:
                fastavro.schemaless_reader(io.BytesIO(message.value() or b""), schema)
                count += 1
    seconds = time.perf_counter() - start
    consumer.close()
    return {"count": count, "seconds": seconds}


def naive(args: argparse.Namespace) -> dict[str, Any]:
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))
    url = urllib.parse.urlsplit(args.base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    headers = {
        "Authorization": _auth(args.api_key),
        "Content-Type": "application/json",
        "X-Button-API-Version": "2019-01-01",
    }
    consumer = _consumer(args.bootstrap)
    consumer.subscribe([args.topic])
    count = 0
    start = time.perf_counter()
    deadline = time.monotonic() + args.timeout
    while count < args.limit and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        record = fastavro.schemaless_reader(io.BytesIO(message.value() or b""), schema)
        body = body_from_record(cast("dict[str, Any]", record))
        if body is not None:
            conn.request("POST", "/v1/order", json.dumps(body).encode(), headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        count += 1
    seconds = time.perf_counter() - start
    consumer.close()
    conn.close()
    return {"count": count, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("kind", choices=("http", "decode", "naive"))
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--base-url", default="")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--bodies", default="")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    run = {"http": http_ceiling, "decode": decode_ceiling, "naive": naive}[args.kind]
    result = run(args)
    result["cpu_s"] = _cpu()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
