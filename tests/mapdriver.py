"""Run ``button-consumer map`` on event lines, in this process or under another checkout's code.

The arrival-order property test (``tests/unit/test_arrival_order_map.py``) drives the service
only through the ``map`` command, an interface every version of the service has: JSON lines of
events in, one JSON line per event out with the Button request it becomes. Both drivers call the
command's entry point, ``consumer.cli.main(["map", "--now", NOW, FILE])`` (what the
``button-consumer`` script runs), with the events in a file and stdout captured:

- ``InProcessMap`` in this process, against this checkout (what ``make test`` runs);
- ``CheckoutMap`` in a worker process that runs this file with ``PYTHONPATH`` set to another
  checkout, so the same test judges another version of the service (an older one, to see the
  faults it finds). The worker stays up for the whole session (a process per example would
  spend most of the run importing).

Worker protocol, one JSON document per line on stdin and stdout: the first answer is
``{"consumer": PATH}`` (the package the worker imported); then each request
``{"now": ISO-8601, "lines": [str, ...]}`` is answered ``{"status": int, "output": str}`` (the
exit status and stdout of ``map``) or ``{"error": str}`` (the traceback of a ``map`` that
crashed). Only the standard library and ``consumer`` are imported here, so any checkout can run
it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Protocol


class MapCrashedError(AssertionError):
    """``map`` raised instead of answering (its traceback is the message)."""


class MapDriver(Protocol):
    """``map`` over some checkout: the output lines, parsed, for the input lines."""

    @property
    def consumer_path(self) -> str: ...

    def run(self, lines: list[str], now: str) -> list[dict[str, Any]]: ...


def run_map_command(lines: list[str], now: str, workdir: Path) -> tuple[int, str]:
    """``button-consumer map --now NOW FILE`` in this process: (exit status, stdout)."""
    from consumer.cli import main  # the checkout on sys.path: this one, or the worker's

    path = workdir / "events.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["map", "--now", now, str(path)])
    return status, out.getvalue()


def _parse_output(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


class InProcessMap:
    """``map`` of the checkout this test process imports."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir

    @property
    def consumer_path(self) -> str:
        import consumer

        return str(Path(consumer.__file__).parent)

    def run(self, lines: list[str], now: str) -> list[dict[str, Any]]:
        try:
            _, output = run_map_command(lines, now, self._workdir)
        except Exception as exc:
            raise MapCrashedError(traceback.format_exc()) from exc
        return _parse_output(output)


class CheckoutMap:
    """``map`` of another checkout, run by a worker process (this file as a script).

    Raises:
        RuntimeError: the worker did not start, or imported ``consumer`` from elsewhere.
    """

    def __init__(self, checkout: Path) -> None:
        checkout = checkout.resolve()
        if not (checkout / "consumer" / "cli.py").is_file():
            raise RuntimeError(f"{checkout} is not a checkout of this project (no consumer/cli.py)")
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=checkout,
        )
        try:
            self._consumer_path = str(self._receive().get("consumer"))
            if not Path(self._consumer_path).resolve().is_relative_to(checkout):
                raise RuntimeError(f"the worker imported {self._consumer_path}, not {checkout}")
        except BaseException:
            self.close()
            raise

    @property
    def consumer_path(self) -> str:
        return self._consumer_path

    def run(self, lines: list[str], now: str) -> list[dict[str, Any]]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"now": now, "lines": lines}) + "\n")
        self._process.stdin.flush()
        answer = self._receive()
        if "error" in answer:
            raise MapCrashedError(str(answer["error"]))
        return _parse_output(str(answer["output"]))

    def close(self) -> None:
        """End the worker (it exits when its stdin closes) and close the pipes."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        finally:
            if self._process.stdout is not None:
                self._process.stdout.close()

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the map worker exited (status {self._process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer


def _serve() -> None:
    """The worker: answer requests on stdin until it closes."""
    import consumer

    reply = sys.stdout
    reply.write(json.dumps({"consumer": str(Path(consumer.__file__).parent)}) + "\n")
    reply.flush()
    with tempfile.TemporaryDirectory() as workdir:
        for request in sys.stdin:
            asked = json.loads(request)
            try:
                status, output = run_map_command(asked["lines"], asked["now"], Path(workdir))
                answer: dict[str, Any] = {"status": status, "output": output}
            except Exception:
                answer = {"error": traceback.format_exc()}
            reply.write(json.dumps(answer) + "\n")
            reply.flush()


if __name__ == "__main__":
    _serve()
