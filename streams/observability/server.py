"""The workers' HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz``, in a daemon thread.

- ``/metrics``: prometheus_client's text format of the default registry (or the one given).
- ``/healthz``: 200 ``ok`` while ``health()`` is true (the worker's loop is alive), else 503.
- ``/readyz``: 200 ``ready`` while ``ready()`` is true (partitions assigned, caught up), else 503.

A probe that raises counts as false. Binds 0.0.0.0; port 0 takes a free port (``handle.port``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

Probe = Callable[[], bool]


class MetricsServer:
    """A running server; ``close()`` stops it and frees the port."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host: str = str(httpd.server_address[0])
        self.port: int = int(httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _probe(check: Probe) -> bool:
    try:
        return bool(check())
    except Exception:
        log.exception("health probe failed")
        return False


def _handler(
    health: Probe, ready: Probe, registry: CollectorRegistry
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fraudstream"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = _probe(health)
                self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
            elif path == "/readyz":
                ok = _probe(ready)
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            elif path == "/":
                self._send(200, b"fraudstream: /metrics /healthz /readyz\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def start_http_server(
    port: int,
    health: Probe,
    ready: Probe,
    *,
    host: str = "0.0.0.0",
    registry: CollectorRegistry = REGISTRY,
) -> MetricsServer:
    """Serve the endpoints on ``host:port`` in a daemon thread; return a handle to close it."""
    httpd = ThreadingHTTPServer((host, port), _handler(health, ready, registry))
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-http", daemon=True
    )
    thread.start()
    server = MetricsServer(httpd, thread)
    log.info("metrics on http://%s:%d/metrics", host, server.port)
    return server
