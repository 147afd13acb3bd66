"""Java and the Apache Kafka jars: find Java 17+, fetch the runtime jars with Maven.

``python -m streams.kafka.apache fetch [--optional]`` (what ``make install`` runs) ends in
``main`` here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from streams.errors import BrokerError
from streams.kafka import apache_config as cfg

log = logging.getLogger(__name__)


def java_executable() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


@lru_cache(maxsize=4)
def java_major(java: str) -> int | None:
    """The Java feature version (17, 21, ...), or None if it cannot be run."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def require_java() -> str:
    """The java executable, or a one-line BrokerError when there is no Java 17+."""
    java = java_executable()
    if java is None:
        raise BrokerError("Apache Kafka needs Java 17 or newer: no `java` on PATH or in JAVA_HOME")
    major = java_major(java)
    if major is None or major < 17:
        raise BrokerError(f"Apache Kafka needs Java 17 or newer; {java} is Java {major}")
    return java


def java_available() -> bool:
    java = java_executable()
    return java is not None and (java_major(java) or 0) >= 17


def fetch_jars(directory: Path | None = None) -> Path:
    """The folder of Kafka's runtime jars, resolved with Maven into a temporary folder that is
    renamed into place when complete. One-line BrokerError without Maven or on failure."""
    target = directory or cfg.jars_dir()
    if cfg.jars_complete(target):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"Apache Kafka jars missing in {target} and no `mvn` on PATH to fetch them "
            f"(or set {cfg.JARS_ENV} to a folder holding kafka_2.13-{cfg.KAFKA_VERSION}.jar)"
        )
    if not cfg.POM.is_file():
        raise BrokerError(f"cannot fetch Apache Kafka: {cfg.POM} is missing")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    cmd = [
        mvn, "-B", "-q", "-f", str(cfg.POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
        f"-Dkafka.version={cfg.KAFKA_VERSION}", f"-Dlog4j.version={cfg.LOG4J_VERSION}",
    ]  # fmt: skip
    log.info("fetching Apache Kafka %s jars into %s", cfg.KAFKA_VERSION, target)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0 or not cfg.jars_complete(partial):
            lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
            raise BrokerError(
                f"Maven could not fetch Apache Kafka {cfg.KAFKA_VERSION} (exit "
                f"{done.returncode}): {lines[-1] if lines else 'no output'}"
            )
        if target.exists():  # an incomplete earlier folder
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def main(argv: list[str]) -> int:
    """``python -m streams.kafka.apache fetch [--optional]``: fetch the jars ahead of time;
    with ``--optional`` a machine without Java 17+ or Maven gets one line and exit code 0."""
    if argv[:1] != ["fetch"]:
        print("usage: python -m streams.kafka.apache fetch [--optional]", file=sys.stderr)
        return 2
    optional = "--optional" in argv[1:]
    missing = [
        what
        for what, there in (("Java 17+", java_available()), ("Maven", bool(shutil.which("mvn"))))
        if not there
    ]
    if optional and missing and not cfg.jars_complete(cfg.jars_dir()):
        print(f"no {' and no '.join(missing)} here: the embedded broker (Tansu) will be used")
        return 0
    try:
        print(f"Apache Kafka {cfg.KAFKA_VERSION} jars in {fetch_jars()}")
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 0 if optional else 1
    return 0
