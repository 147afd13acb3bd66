"""What the stage-2 app has done so far (read by ``is_ready``, the failures and tests)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("streams.stage2.app")  # one logger name for the stage-2 app's lines


@dataclass
class Stage2Stats:
    scored: int = 0
    dead_letters: int = 0
    retried: int = 0
    stale: int = 0  # records skipped as fetched before a seek back (they come again)
    ready: bool = False  # its partitions assigned (the first rebalance completed)

    def rebalanced(self, sender: Any = None, **kwargs: Any) -> None:
        """A rebalance completed (faust's ``on_rebalance_complete`` signal); the first one makes
        the app ready (logged once)."""
        if not self.ready:
            log.info("stage 2 ready: partitions assigned")
        self.ready = True
