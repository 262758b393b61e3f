"""A real Confluent-compatible schema registry for tests and the demo, without Docker.

Confluent's own registry is not on Maven Central and Karapace is not on PyPI; Apicurio Registry
is on Central as a runnable Quarkus assembly and speaks the Confluent REST API under
`/apis/ccompat/v7`. Its in-memory H2 storage needs no database.

Version: Apicurio builds the application for Java 21 from 3.2.0 on, and Central serves no 3.1.x
`apicurio-registry-app`, so 3.0.9 is the newest release that runs on Java 17. It is downloaded
from the Maven repository directly (checksum pinned below) rather than through
`mvn dependency:copy`: the parent POM of the 3.0.x releases is missing from Central, so Maven
refuses to read the artifact's descriptor. The unpacked assembly is cached under
`.cache/registry/`.

Python API: `LocalRegistry` (a context manager, same lifecycle guarantees as `LocalKafka`).
CLI (`python -m consumer.devtools.registry`): `up` / `down` / `status` (detached, state in
`.run/registry/`, last line `SCHEMA_REGISTRY_URL=...`), `run` (foreground), `fetch`.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from consumer.devtools._proc import (
    LocalJvmService,
    ToolError,
    cache_dir,
    file_lock,
    free_port,
    repo_root,
    require_tool,
    serve_foreground,
    service_cli,
    spawn,
    tail,
)

APICURIO_VERSION = "3.0.9"
APICURIO_SHA512 = (
    "1ed16d7284599c705a1ccbc551b307064990eb1f58c340e37eedc80716f24aba"
    "6216b85db35bc6c1651e44fdfd3598c4c6daa082f18e020e6b8f192036e609c0"
)
MAVEN_REPOSITORY = os.environ.get("MAVEN_REPOSITORY_URL", "https://repo.maven.apache.org/maven2")
CCOMPAT_PATH = "/apis/ccompat/v7"
DEFAULT_STATE_DIR = repo_root() / ".run" / "registry"
ENV_VAR = "SCHEMA_REGISTRY_URL"
_LABEL = "local schema registry"


def apicurio_home(version: str = APICURIO_VERSION, sha512: str = APICURIO_SHA512) -> Path:
    """The unpacked assembly, downloaded and verified on first use."""
    cache = cache_dir("registry")
    home = cache / f"apicurio-registry-app-{version}"
    with file_lock(cache / ".lock"):
        if (home / ".complete").is_file():
            return home
        name = f"apicurio-registry-app-{version}-all.tar.gz"
        url = f"{MAVEN_REPOSITORY}/io/apicurio/apicurio-registry-app/{version}/{name}"
        archive = cache / f"{name}.partial"
        _download(url, archive, sha512)
        unpacking = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(unpacking, filter="data")
            shutil.rmtree(home, ignore_errors=True)
            unpacking.replace(home)
        finally:
            shutil.rmtree(unpacking, ignore_errors=True)
            archive.unlink(missing_ok=True)
        (home / ".complete").touch()
        return home


def _download(url: str, target: Path, sha512: str) -> None:
    if not url.startswith(("https://", "http://")):
        raise ToolError(f"refusing to download from {url!r}")
    digest = hashlib.sha512()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:  # noqa: S310 - scheme checked above
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, urllib.error.URLError) as exc:
        raise ToolError(f"downloading {url} failed: {exc}") from exc
    if digest.hexdigest() != sha512:
        target.unlink(missing_ok=True)
        raise ToolError(f"checksum mismatch for {url}")


def _runner_jar(home: Path) -> Path:
    """The Quarkus entry point: `quarkus-run.jar` (fast-jar) or `*-runner.jar` (legacy-jar)."""
    candidates = [home / "quarkus-run.jar", *sorted(home.glob("*-runner.jar"))]
    for jar in candidates:
        if jar.is_file():
            return jar
    raise ToolError(f"no quarkus-run.jar or *-runner.jar in {home}")


class LocalRegistry(LocalJvmService):
    """Apicurio Registry on 127.0.0.1 with in-memory storage.

    `url` is the Confluent-compatible base URL to give `SchemaRegistryClient`. An owned registry
    (the default) dies with its owner, even when the owner is SIGKILLed; a `detached` one
    outlives it (the `up` command).
    """

    NAME = "schema registry"
    LOG_NAME = "registry.log"

    def __init__(
        self,
        *,
        heap_mb: int = 384,
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        detached: bool = False,
    ) -> None:
        super().__init__(
            heap_mb=heap_mb,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            detached=detached,
        )

    @property
    def url(self) -> str:
        """The Confluent-compatible API, e.g. http://127.0.0.1:PORT/apis/ccompat/v7."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    @property
    def address(self) -> str:
        return self.url

    def start(self) -> LocalRegistry:
        """Fetch if needed, start, and return once the ccompat API answers."""
        if self._proc is not None:
            return self
        java = require_tool("java")
        jar = _runner_jar(apicurio_home())
        if not self.detached:
            atexit.register(self.stop)
        try:
            self._data_dir = Path(tempfile.mkdtemp(prefix="localregistry-"))
            self._port = free_port()
            command = [
                java,
                f"-Xmx{self.heap_mb}m",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                "-Dquarkus.http.host=127.0.0.1",
                f"-Dquarkus.http.port={self._port}",
                # Recorded in the command line so `down` can tell this JVM from a reused pid.
                f"-Djava.io.tmpdir={self._data_dir}",
                "-jar",
                str(jar),
            ]
            self._proc = spawn(
                command, log_path=self.log_path, cwd=self._data_dir, detached=self.detached
            )
            self._wait_ready(self._proc, time.monotonic() + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        probe = f"{self.url}/subjects"
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(probe, timeout=2) as response:  # noqa: S310 - our URL
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        if proc.poll() is not None:
            raise ToolError(
                f"schema registry exited with code {proc.returncode} during start-up; "
                f"log tail ({self.log_path}):\n{tail(self.log_path)}"
            )
        raise ToolError(
            f"schema registry on port {self.port} was not ready within "
            f"{self.start_timeout:.0f}s; log tail ({self.log_path}):\n{tail(self.log_path)}"
        )


def _run() -> int:
    with LocalRegistry() as registry:
        return serve_foreground(_LABEL, f"{ENV_VAR}={registry.url}")


def _fetch() -> int:
    started = time.monotonic()
    home = apicurio_home()
    print(f"{_runner_jar(home)} ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return service_cli(
        argv,
        prog="python -m consumer.devtools.registry",
        description="A local Confluent-compatible schema registry (Apicurio) from Maven Central.",
        label=_LABEL,
        env_var=ENV_VAR,
        default_state_dir=DEFAULT_STATE_DIR,
        detached=lambda: LocalRegistry(detached=True),
        run=_run,
        fetch=_fetch,
    )


if __name__ == "__main__":
    sys.exit(main())
