"""Waiting for the broker: poll with backoff, say so in the log and the ``broker_up`` metric."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaException

from streams.kafka import clients
from streams.observability import metrics as m
from streams.settings import Settings

log = logging.getLogger(__name__)


def wait_for_broker(
    settings: Settings,
    stage: str,
    stop: threading.Event | None = None,
    first_delay_s: float = 0.5,
    max_delay_s: float = 15.0,
) -> bool:
    """Block until the broker answers a metadata request (backoff from ``first_delay_s`` to
    ``max_delay_s``); False if ``stop`` was set first. Uses the full client configuration, so
    SASL/TLS settings apply to the probe too."""
    stop = stop or threading.Event()
    delay = first_delay_s
    admin = clients.admin(settings)
    reported = False
    while not stop.is_set():
        try:
            admin.list_topics(timeout=max(delay, 1.0))
            m.set_broker_up(stage, True)
            if reported:
                log.warning("%s: broker at %s answers; starting", stage, settings.bootstrap_servers)
            return True
        except KafkaException as exc:
            m.set_broker_up(stage, False)
            reported = True
            log.warning(
                "%s: broker at %s not reachable yet (%s); retrying in %.1fs",
                stage,
                settings.bootstrap_servers,
                exc.args[0].str(),
                delay,
            )
        stop.wait(delay)
        delay = min(delay * 2, max_delay_s)
    return False
