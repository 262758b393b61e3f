"""Check for Java 17+ and Maven (the local broker's needs) and, with `--monitoring`,
Prometheus with promtool (the alert-rule tests and the live monitoring test); install them with
apt-get as root.

`make test` (with `--monitoring`), `make demo` and `make kafka-up` run this first so a missing
JDK fails in one clear line instead of deep inside a fixture; the demo and the broker alone
need no Prometheus. When every tool is present it only runs `java -version`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

MIN_JAVA = 17
JAVA_PACKAGES = ("openjdk-17-jre-headless", "maven")
PROMETHEUS_PACKAGES = ("prometheus",)  # Debian's package ships prometheus and promtool
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_major_version() -> int | None:
    """The major version of `java` on PATH, or None when there is none (1.8 counts as 8)."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        result = subprocess.run(  # noqa: S603 - the java found on PATH, fixed argument
            [java, "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def problems(*, monitoring: bool = True) -> list[str]:
    """What is missing, in words; empty when everything is in place.

    ``monitoring``: Prometheus and promtool are needed too (the tests), not only Java and Maven.
    """
    found: list[str] = []
    major = java_major_version()
    if major is None:
        found.append(f"`java` (JDK/JRE {MIN_JAVA}+) is not on PATH")
    elif major < MIN_JAVA:
        found.append(f"`java` on PATH is version {major}; Kafka 4 needs {MIN_JAVA}+")
    if shutil.which("mvn") is None:
        found.append("`mvn` (Apache Maven) is not on PATH")
    for tool in ("prometheus", "promtool") if monitoring else ():
        if shutil.which(tool) is None:
            found.append(f"`{tool}` (Prometheus) is not on PATH")
    return found


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install(packages: tuple[str, ...]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = shutil.which("apt-get") or "apt-get"
    for command in (
        [apt, "update"],
        [apt, "install", "-y", "--no-install-recommends", *packages],
    ):
        print("+", " ".join(command), file=sys.stderr, flush=True)
        subprocess.run(command, stdin=subprocess.DEVNULL, env=env, check=True)  # noqa: S603


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.devtools.prereqs")
    parser.add_argument(
        "--monitoring", action="store_true", help="Prometheus and promtool too (the tests)"
    )
    monitoring = parser.parse_args(argv).monitoring
    missing = problems(monitoring=monitoring)
    if not missing:
        return 0
    for problem in missing:
        print(f"prereqs: {problem}", file=sys.stderr)
    packages = JAVA_PACKAGES + (PROMETHEUS_PACKAGES if monitoring else ())
    if not _can_install():
        what = "Maven and Prometheus" if monitoring else "Maven"
        print(
            f"prereqs: install Java {MIN_JAVA}+, {what} (Debian/Ubuntu: `sudo apt-get install "
            f"{' '.join(packages)}`), then re-run",
            file=sys.stderr,
        )
        return 1
    try:
        _apt_install(packages)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"prereqs: installing with apt-get failed: {exc}", file=sys.stderr)
        return 1
    still_missing = problems(monitoring=monitoring)
    for problem in still_missing:
        print(f"prereqs: still missing after apt-get: {problem}", file=sys.stderr)
    return 1 if still_missing else 0


if __name__ == "__main__":
    sys.exit(main())
