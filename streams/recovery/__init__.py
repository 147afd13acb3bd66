"""Error recovery: per-partition state and its rebuild, replay, dead-letter inspect and redrive."""
