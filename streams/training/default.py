"""The committed default model (``models/default``): trained on simulated data, reproducibly.

    python -m streams.training.default models/default

Simulates ``SIMULATION`` (120 days from 2018-04-01), reads it back through the handbook reader
(the path any user's data takes), runs stage 1 with the shipped rules over it, and trains on the
rows it forwarded in eight weeks late in the period with the default parameters. The same
library versions give the same model bytes, hence the same version.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from streams.data.handbook import read_handbook
from streams.data.simulate import simulate, write_csv
from streams.rules.loader import SHIPPED_RULES
from streams.settings import Settings
from streams.training.train import stage1_verdicts, train_model

SIMULATION: dict[str, Any] = {"customers": 1000, "terminals": 2000, "days": 120, "seed": 7}
TRAIN_START = date(2018, 5, 13)
TRAIN_END = date(2018, 7, 8)  # validation: 2018-07-15 .. 2018-07-22 after the 7-day delay
SEED = 0


def build_default_model(out_dir: Path) -> dict[str, Any]:
    """Simulate, train and write the default model into ``out_dir``; return its metadata."""
    frame = simulate(**SIMULATION)
    with tempfile.TemporaryDirectory() as tmp:
        df = read_handbook(write_csv(frame, Path(tmp) / "simulated.csv"))
    args = ", ".join(f"{k}={v}" for k, v in SIMULATION.items())
    features, forwarded = stage1_verdicts(df, Settings(), SHIPPED_RULES)
    return train_model(
        df,
        TRAIN_START,
        TRAIN_END,
        out_dir,
        seed=SEED,
        features=features,
        forwarded=forwarded,
        source=f"simulated: streams.data.simulate.simulate({args}); stage 1 with the shipped "
        "rules/",
    )


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("models/default")
    meta = build_default_model(out)
    print(f"{meta['version']} -> {out}: {meta['metrics']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
