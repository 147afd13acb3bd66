"""Garbage-collector settings for the worker loops (stage 1 and stage 2).

A worker allocates a few dozen short-lived objects per transaction (decoded JSON, the feature
row, output dicts) next to a large, slowly growing set of long-lived ones (card windows or the
stage-2 card table, the label cache, imported modules). With CPython's default thresholds the
collector runs every 700 net allocations and keeps rescanning the long-lived objects: about a
quarter of stage 1's time over a backlog, and a fifth of stage 2's (measured with py-spy and a
stage-2 micro-benchmark: per record, decode 15 µs with the default thresholds and 5 µs with
these, decisions 20 and 6 µs). ``tuned_gc`` freezes what exists when the loop starts (never
scanned again), collects young objects every 100,000 allocations and the old generation a
thousand times less often. A stage-1 poll holds up to 10,000 transactions' objects alive at
once, so a smaller young threshold rescans them many times per poll: at 10,000 the stage-1
bench ran 44.6-51.2k tx/s, at 100,000 51.5-56.9k (three runs each, 400k transactions).
Reference counting still frees everything not in a cycle at once.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

THRESHOLDS = (100_000, 50, 1000)


@contextlib.contextmanager
def tuned_gc(thresholds: tuple[int, int, int] = THRESHOLDS) -> Iterator[bool]:
    """Freeze the heap and raise the thresholds for the block; restored afterwards. Only in
    the main thread (a worker process): a worker run in a thread of a larger program (tests,
    embedding) leaves that program's collector alone. Yields whether it tuned."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    try:
        yield True
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
