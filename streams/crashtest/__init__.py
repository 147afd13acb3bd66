"""The crash-test runner: traffic with labels and poison, workers killed -9 at random, and a
verdict on what the decisions topic holds (lost, duplicated, conflicting)."""
