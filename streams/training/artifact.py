"""Write a model directory: ``model.ubj``, the card files, and ``metadata.json`` last.

Each file is written to a temporary name and renamed into place, and ``metadata.json`` comes
last, so a stage-2 worker watching the directory (``ModelHolder``) never loads half a model; the
metadata records the sha256 of the booster bytes, which the loader checks.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import xgboost as xgb

from streams.stage2.model import METADATA_FILE, MODEL_FILE, model_digest


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist, key in (
        ("xgboost-cpu", "xgboost"),
        ("xgboost", "xgboost"),
        ("numpy", "numpy"),
        ("polars", "polars"),
        ("scikit-learn", "scikit-learn"),
    ):
        if key in out:
            continue
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model directory is shared and committed
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model_dir(
    booster: xgb.Booster,
    metadata: dict[str, Any],
    out_dir: Path | str,
    *,
    name: str = "fraudstream",
    extras: Callable[[Path, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Write the booster and its metadata; returns the metadata with version and digest added.

    The version is ``<name>-<first 10 hex digits of the model bytes' sha256>``: the same bytes
    always get the same version. ``extras(out_dir, metadata)`` writes further files (the model
    card and plots) before the metadata is published.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = bytes(booster.save_raw(raw_format="ubj"))
    digest = model_digest(raw)
    full: dict[str, Any] = {"version": f"{name}-{digest[:10]}", "model_sha256": digest}
    full.update(metadata)
    full.setdefault("libraries", library_versions())
    full.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
    atomic_write(out / MODEL_FILE, raw)
    if extras is not None:
        extras(out, full)
    text = json.dumps(full, indent=2, ensure_ascii=False) + "\n"
    atomic_write(out / METADATA_FILE, text.encode("utf-8"))
    return full
