"""Hot reload of a rule directory, swapped in only between batches and only when valid.

A watchfiles watcher (daemon thread) only raises a "changed" flag. The worker calls
``maybe_reload()`` between batches: the whole directory is loaded and validated off to the side
and, if valid, replaces the current set in one reference assignment. A batch therefore always
sees one complete set (``current()``), and an invalid edit (or an editor's half-written file)
leaves the previous set in place until a later change makes the directory valid again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import watchfiles

from streams.errors import RuleError
from streams.rules.loader import load_rules
from streams.rules.model import RuleSet

log = logging.getLogger(__name__)


class RuleReloader:
    """The current rule set of ``directory``, reloaded when its files change.

    The initial load must succeed (``RuleError`` otherwise). ``on_error`` is called with the
    ``RuleError`` of each failed reload, after it has been logged and counted. With
    ``check_examples`` a set whose written examples fail is refused like an invalid one.
    ``watch=False`` starts no watcher: only ``reload_now()`` reloads.
    """

    def __init__(
        self,
        directory: Path | str,
        on_error: Callable[[RuleError], None] | None = None,
        *,
        check_examples: bool = True,
        watch: bool = True,
        debounce_ms: int = 1_600,
        step_ms: int = 50,
        tick_ms: int = 200,
        force_polling: bool | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.on_error = on_error
        self.check_examples = check_examples
        self.reload_successes = 0
        self.reload_failures = 0
        self.last_error: RuleError | None = None
        self._current = load_rules(self.directory, check_examples=check_examples)
        self._changed = threading.Event()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._timing = (debounce_ms, step_ms, tick_ms)
        self._force_polling = force_polling
        self._thread = threading.Thread(target=self._watch, name="rules-watch", daemon=True)
        if watch:
            self._thread.start()
        else:
            self._ready.set()  # no watcher: only reload_now() reloads

    def current(self) -> RuleSet:
        """The set to judge the next batch with (complete and valid; never half-loaded)."""
        return self._current

    @property
    def pending(self) -> bool:
        """A change was seen and not reloaded yet."""
        return self._changed.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the watcher is running (changes made before may be seen only after)."""
        return self._ready.wait(timeout)

    def maybe_reload(self) -> bool:
        """Reload if a change was seen; True when a new, valid set was swapped in."""
        if not self._changed.is_set():
            return False
        with self._lock:
            if not self._changed.is_set():
                return False
            self._changed.clear()  # cleared first: a change during the load triggers another
            return self._reload()

    def reload_now(self) -> bool:
        """Reload whether or not a change was seen (e.g. on an operator's request)."""
        with self._lock:
            self._changed.clear()
            return self._reload()

    def _reload(self) -> bool:
        old = self._current
        try:
            new = load_rules(self.directory, check_examples=self.check_examples)
        except RuleError as exc:
            self.reload_failures += 1
            self.last_error = exc
            log.error(
                "rule reload failed, keeping version %s: %s", old.version, "; ".join(exc.problems)
            )
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:
                    log.exception("rule reload on_error callback failed")
            return False
        if new.version == old.version:
            return False
        self._current = new  # one reference assignment: readers see old or new, never a mix
        self.reload_successes += 1
        log.info("rules reloaded: version %s -> %s (%d rules)", old.version, new.version, len(new))
        return True

    def _watch(self) -> None:
        try:
            for changes in watchfiles.watch(
                self.directory,
                watch_filter=None,
                stop_event=self._stop,
                yield_on_timeout=True,
                raise_interrupt=False,
                force_polling=self._force_polling,
                debounce=self._timing[0],
                step=self._timing[1],
                rust_timeout=self._timing[2],
            ):
                if changes or not self._ready.is_set():
                    # The first tick also covers edits made before the watcher existed.
                    self._changed.set()
                self._ready.set()
        except Exception:
            log.exception("rule watcher on %s stopped; rules will no longer reload", self.directory)
        finally:
            self._ready.set()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> RuleReloader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
