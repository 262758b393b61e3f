"""Process plumbing shared by the local Kafka broker and the local schema registry.

Both tools start a JVM that must never outlive the process that owns it: a foreground owner
kills it on exit, on a signal and even when it is SIGKILLed (the kernel's parent-death signal),
while a detached one is found again through a small state file and stopped by pid. Everything
here is about that lifecycle; nothing knows about Kafka or schemas.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Protocol, Self

_PR_SET_PDEATHSIG = 1


class ToolError(RuntimeError):
    """A local tool (Java, Maven, a JVM service) could not be prepared or started."""


def repo_root() -> Path:
    """The repository root: caches (`.cache/`) and detached state (`.run/`) live under it."""
    return Path(__file__).resolve().parents[2]


def cache_dir(name: str) -> Path:
    path = repo_root() / ".cache" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def sha256_of(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so concurrent `up`s or cache fills do not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolError(
            f"`{name}` is not on PATH; run `python -m consumer.devtools.prereqs --monitoring` "
            "(it installs Java 17, Maven and Prometheus on Debian/Ubuntu when run as root)"
        )
    return found


def run_maven(args: Sequence[str], *, pom: Path, timeout: float = 900.0) -> None:
    """Run Maven in batch mode on `pom`; raise with Maven's own output when it fails."""
    mvn = require_tool("mvn")
    command = [mvn, "-B", "-q", "-f", str(pom), *args]
    result = subprocess.run(  # noqa: S603 - fixed executable, arguments built here
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise ToolError(f"`{' '.join(command)}` failed ({result.returncode}):\n{output}")


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when its parent dies, even by SIGKILL.

    The kernel sends the signal when the *thread* that forked the child exits, so start
    owned services from a long-lived thread (the main thread in tests, CLIs and the demo).
    libc is looked up here, in the parent: between fork and exec the child of a threaded
    process (librdkafka starts threads) must not take the dynamic loader's locks.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(127)

    return preexec


def spawn(
    command: Sequence[str], *, log_path: Path, cwd: Path, detached: bool
) -> subprocess.Popen[bytes]:
    """Start `command` with its output in `log_path`.

    Owned (not detached): dies with this process. Detached: its own session, survives us,
    and is found again through a `ServiceState` file.
    """
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - fixed executable, arguments built here
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=detached,
            preexec_fn=None if detached else _die_with_parent(os.getpid()),  # noqa: PLW1509
        )


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in {"Z", "X"}


def pid_cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def stop_process(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; always reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def stop_pid(pid: int, *, grace: float) -> None:
    """Like `stop_process`, for a process that is not our child (a detached service)."""
    for sig, wait_for in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_until(lambda: not pid_alive(pid), timeout=wait_for):
            # Dead; give init a moment to reap it so no <defunct> entry lingers.
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=5.0)
            return
    raise ToolError(f"process {pid} survived SIGKILL")


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass(frozen=True)
class ServiceState:
    """What a detached service leaves in `.run/<name>/state.json` for the next command."""

    pid: int
    port: int
    data_dir: str
    address: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ServiceState | None:
        try:
            raw = json.loads(path.read_text())
            return cls(
                pid=int(raw["pid"]),
                port=int(raw["port"]),
                data_dir=str(raw["data_dir"]),
                address=str(raw["address"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running(self) -> bool:
        """Alive, and still our JVM: its command line names our data dir (guards pid reuse)."""
        return pid_alive(self.pid) and self.data_dir in pid_cmdline(self.pid)


class DetachableService(Protocol):
    """What the `up`/`down`/`status` commands need from a service (LocalKafka, LocalRegistry)."""

    @property
    def log_path(self) -> Path: ...

    def start(self) -> object: ...

    def state(self) -> ServiceState: ...


class LocalJvmService:
    """What the local broker and the local registry share: a JVM in a temp directory.

    Subclasses implement ``start()`` (setting ``_proc``, ``_data_dir`` and ``_port``) and
    ``address``. An owned service (the default) is stopped when its owner exits; a ``detached``
    one outlives this process (the ``up`` command) and is stopped by pid.
    """

    NAME = "service"
    LOG_NAME = "service.log"

    def __init__(
        self, *, heap_mb: int, start_timeout: float, stop_timeout: float, detached: bool
    ) -> None:
        self.heap_mb = heap_mb
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.detached = detached
        self._proc: subprocess.Popen[bytes] | None = None
        self._data_dir: Path | None = None
        self._port: int | None = None

    def _not_started(self) -> RuntimeError:
        return RuntimeError(f"{type(self).__name__} is not started")

    @property
    def port(self) -> int:
        if self._port is None:
            raise self._not_started()
        return self._port

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise self._not_started()
        return self._proc.pid

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise self._not_started()
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self.data_dir / self.LOG_NAME

    @property
    def address(self) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM the JVM, SIGKILL it after ``stop_timeout``, and remove its directory."""
        atexit.unregister(self.stop)
        self._discard()

    def _discard(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, grace=self.stop_timeout)
        data_dir, self._data_dir = self._data_dir, None
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
        self._port = None

    def state(self) -> ServiceState:
        """What ``down`` needs to find this service again."""
        return ServiceState(
            pid=self.pid, port=self.port, data_dir=str(self.data_dir), address=self.address
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def detached_up(
    state_dir: Path, label: str, env_var: str, make: Callable[[], DetachableService]
) -> int:
    """Start a detached service unless one recorded in `state_dir` still runs.

    Progress goes to stderr; stdout gets one line, `ENV_VAR=address`, so that
    `eval "$(... up)"` works and the address is always the last line printed.
    """
    state_file = state_dir / "state.json"
    with file_lock(state_dir / "lock"):
        state = ServiceState.load(state_file)
        if state is not None and state.running():
            print(f"{label} already running (pid {state.pid})", file=sys.stderr)
        else:
            _forget(state_file, state)
            print(f"starting {label} ...", file=sys.stderr)
            started = time.monotonic()
            service = make()
            service.start()  # on failure or interruption it stops its own JVM
            state = service.state()
            state.save(state_file)
            print(
                f"{label} started in {time.monotonic() - started:.1f}s "
                f"(pid {state.pid}, log {service.log_path})",
                file=sys.stderr,
            )
    print(f"{env_var}={state.address}", flush=True)
    return 0


def detached_down(state_dir: Path, label: str, grace: float = 15.0) -> int:
    """Stop the detached service recorded in `state_dir` and remove its data directory."""
    state_file = state_dir / "state.json"
    with file_lock(state_dir / "lock"):
        state = ServiceState.load(state_file)
        if state is None:
            print(f"no {label} is running", file=sys.stderr)
            return 0
        if state.running():
            stop_pid(state.pid, grace=grace)
            print(f"{label} stopped (pid {state.pid})", file=sys.stderr)
        else:
            print(f"{label} was not running; removed its leftovers", file=sys.stderr)
        _forget(state_file, state)
    return 0


def detached_status(state_dir: Path, label: str, env_var: str) -> int:
    state = ServiceState.load(state_dir / "state.json")
    if state is None or not state.running():
        print(f"{label}: not running")
        return 1
    print(f"{label}: running, pid {state.pid}, data {state.data_dir}")
    print(f"{env_var}={state.address}")
    return 0


def _forget(state_file: Path, state: ServiceState | None) -> None:
    if state is not None:
        shutil.rmtree(state.data_dir, ignore_errors=True)
    state_file.unlink(missing_ok=True)


def serve_foreground(label: str, address_line: str) -> int:
    """Print the address and block until Ctrl-C or SIGTERM; the caller's `with` stops it."""
    print(address_line, flush=True)
    print(f"{label} running in the foreground; Ctrl-C stops it", file=sys.stderr)
    wait_forever()
    return 0


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, SIGINT into KeyboardInterrupt, so that
    `with`/`finally` blocks stop owned services.

    SIGINT is set explicitly because a shell starts background jobs with it ignored, and
    Python keeps an inherited "ignore". For foreground CLIs only; libraries and tests must not
    install signal handlers.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def wait_forever() -> None:
    """Block the main thread until a signal ends it."""
    while True:
        signal.pause()


def service_cli(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    label: str,
    env_var: str,
    default_state_dir: Path,
    detached: Callable[[], DetachableService],
    run: Callable[[], int],
    fetch: Callable[[], int],
) -> int:
    """The ``up | down | status | run | fetch`` command line of a local JVM service."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("command", choices=["up", "down", "status", "run", "fetch"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir,
        help=f"where `up` records the detached {label} (default: {default_state_dir.name})",
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir
    commands: dict[str, Callable[[], int]] = {
        "up": lambda: detached_up(state_dir, label, env_var, detached),
        "down": lambda: detached_down(state_dir, label),
        "status": lambda: detached_status(state_dir, label, env_var),
        "run": run,
        "fetch": fetch,
    }
    exit_on_signals()
    try:
        return commands[args.command]()
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
