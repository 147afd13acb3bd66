"""The committed default model (models/default) loads and fits the stream features."""

import json
from pathlib import Path

import numpy as np

from streams.features.names import MODEL_FEATURES
from streams.stage2.model import RiskModel
from streams.stage2.policy import DecisionPolicy
from streams.stage2.scoring import ModelHolder, Scorer
from streams.training.default import SIMULATION, TRAIN_END, TRAIN_START

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "default"


def test_default_model_loads_with_the_stream_features():
    model = RiskModel.load(DEFAULT)
    assert model.feature_names == MODEL_FEATURES
    model.check_features(MODEL_FEATURES)
    ModelHolder(DEFAULT)  # what stage 2 does at start


def test_default_model_files_and_metadata():
    for name in (
        "model.ubj",
        "metadata.json",
        "MODEL_CARD.md",
        "pr_curve.png",
        "feature_importance.png",
    ):
        assert (DEFAULT / name).is_file(), name
    assert (DEFAULT / "model.ubj").stat().st_size < 2_000_000
    meta = json.loads((DEFAULT / "metadata.json").read_text())
    assert meta["training_window"] == {
        "start": TRAIN_START.isoformat(),
        "end": TRAIN_END.isoformat(),
    }
    assert f"seed={SIMULATION['seed']}" in meta["data"]["source"]
    assert meta["metrics"]["auc_roc"] > 0.7
    assert meta["version"] in (DEFAULT / "MODEL_CARD.md").read_text()


def test_default_model_scores_a_flagged_transaction():
    model = RiskModel.load(DEFAULT)
    scorer = Scorer(model, DecisionPolicy())
    features = dict.fromkeys(MODEL_FEATURES, 0.0)
    features.update(
        TX_AMOUNT=250.0,
        CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW=40.0,
        CARD_AMOUNT_RATIO_30DAY=6.0,
        TERMINAL_ID_RISK_7DAY_WINDOW=0.5,
    )
    [decision] = scorer.score_batch(
        [
            {
                "transaction_id": "t",
                "card_id": "c",
                "features": features,
                "stage1": {"rules_version": "r", "rules_fired": []},
            }
        ]
    )
    assert 0.0 <= decision["score"] <= 1.0
    assert decision["model_version"] == model.version
    assert np.isfinite(decision["score"])
