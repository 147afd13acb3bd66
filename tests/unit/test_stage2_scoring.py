import json
import logging

import numpy as np
import pytest
import xgboost as xgb

from streams.errors import ModelError
from streams.features.names import MODEL_FEATURES
from streams.stage2.model import RiskModel
from streams.stage2.policy import DecisionPolicy
from streams.stage2.scoring import ModelHolder, Scorer, feature_matrix
from streams.training.artifact import save_model_dir


def _booster(seed: int, names: list[str] = MODEL_FEATURES) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(500, len(names)))
    y = (X[:, seed % 5] - X[:, 7] + rng.normal(scale=0.5, size=500) > 0.8).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": seed, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(X, label=y, feature_names=names), num_boost_round=15)


def _save(seed: int, out, names: list[str] = MODEL_FEATURES) -> dict:
    return save_model_dir(_booster(seed, names), {"feature_names": names}, out, name=f"m{seed}")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    _save(1, a)
    _save(2, b)
    return RiskModel.load(a), RiskModel.load(b)


def _records(n: int, seed: int = 5) -> list[dict]:
    X = np.random.default_rng(seed).normal(size=(n, len(MODEL_FEATURES)))
    return [
        {
            "transaction_id": f"tx{i}",
            "card_id": f"card{i % 7}",
            "terminal_id": "t1",
            "amount": 12.5,
            "ts_ms": 1_522_540_831_000 + i,
            # reversed on purpose: the dict's order must not matter
            "features": dict(reversed(list(zip(MODEL_FEATURES, X[i].tolist(), strict=True)))),
            "stage1": {
                "rules_version": "rules-abc",
                "rules_fired": ["R1", "R7"],
                "reasons": ["HIGH_AMOUNT"],
                "anomaly_score": 0.9,
                "fraud_probability": 0.4,
                "rule_score": 2.0,
            },
            **({"sent_ms": 1000 + i} if i % 2 == 0 else {}),
        }
        for i in range(n)
    ]


def test_score_batch_fields_and_values(models):
    champion, _ = models
    policy = DecisionPolicy(0.3, 0.8, top_reasons=2)
    records = _records(40)
    out = Scorer(champion, policy).score_batch(records)
    X = np.array([[r["features"][n] for n in MODEL_FEATURES] for r in records])
    scores, contribs = champion.predict(X)
    assert len(out) == 40
    for i, (rec, d) in enumerate(zip(records, out, strict=True)):
        assert d["transaction_id"] == rec["transaction_id"]
        assert d["card_id"] == rec["card_id"]
        assert d["stage"] == 2
        assert d["score"] == round(float(scores[i]), 6)
        assert d["action"] == policy.decide(float(scores[i]))
        assert d["model_version"] == champion.version
        assert d["rules_version"] == "rules-abc"
        assert d["rules"] == ["R1", "R7"]
        assert d["rule_reasons"] == ["HIGH_AMOUNT"]
        assert d["reasons"] == champion.reasons(X[i], contribs[i], top_k=2)
        assert "challenger" not in d
        assert d.get("sent_ms") == rec.get("sent_ms")
        assert ("sent_ms" in d) == ("sent_ms" in rec)
    json.dumps(out)  # plain JSON types only
    assert {d["action"] for d in out} <= {"approve", "review", "decline"}


def test_empty_batch(models):
    assert Scorer(models[0], DecisionPolicy()).score_batch([]) == []


def test_missing_feature_is_refused_naming_the_transaction(models):
    records = _records(3)
    del records[1]["features"]["CARD_NEW_TERMINAL"]
    with pytest.raises(ModelError, match=r"transaction tx1\).*CARD_NEW_TERMINAL"):
        Scorer(models[0], DecisionPolicy()).score_batch(records)
    del records[2]["features"]
    with pytest.raises(ModelError):
        feature_matrix(records[2:], MODEL_FEATURES)


def test_extra_features_are_ignored_and_null_is_missing(models):
    records = _records(2)
    records[0]["features"]["SOMETHING_NEW"] = 1.0
    records[1]["features"]["TX_AMOUNT"] = None
    out = Scorer(models[0], DecisionPolicy(top_reasons=20)).score_batch(records)
    assert len(out) == 2 and all(np.isfinite(d["score"]) for d in out)
    json.loads(json.dumps(out, allow_nan=False))  # a missing value is reported as null


def test_non_numeric_feature_is_refused(models):
    records = _records(1)
    records[0]["features"]["TX_AMOUNT"] = "ten"
    with pytest.raises(ModelError, match="non-numeric"):
        Scorer(models[0], DecisionPolicy()).score_batch(records)


def test_challenger_is_recorded_but_never_decides(models):
    champion, challenger = models
    policy = DecisionPolicy(0.3, 0.8)
    records = _records(200)
    with_c = Scorer(champion, policy, challenger).score_batch(records)
    alone = Scorer(champion, policy).score_batch(records)
    c_alone = Scorer(challenger, policy).score_batch(records)
    differs = 0
    for w, a, c in zip(with_c, alone, c_alone, strict=True):
        assert w["action"] == a["action"] and w["score"] == a["score"]
        assert w["model_version"] == champion.version
        assert set(w["challenger"]) == {"model_version", "score", "action"}
        assert w["challenger"]["model_version"] == challenger.version
        assert w["challenger"]["score"] == pytest.approx(c["score"], abs=2e-6)
        assert w["challenger"]["action"] == policy.decide(w["challenger"]["score"])
        differs += w["challenger"]["action"] != w["action"]
    assert differs > 0  # the two models disagree somewhere, and the champion still decides


def test_swap_replaces_models_atomically(models):
    champion, challenger = models
    scorer = Scorer(champion, DecisionPolicy())
    records = _records(5)
    assert scorer.score_batch(records)[0]["model_version"] == champion.version
    scorer.swap(champion=challenger)
    assert scorer.score_batch(records)[0]["model_version"] == challenger.version
    scorer.swap(challenger=champion)
    assert scorer.score_batch(records)[0]["challenger"]["model_version"] == champion.version
    scorer.swap(policy=DecisionPolicy(0.0, 0.0))
    assert {d["action"] for d in scorer.score_batch(records)} == {"decline"}
    scorer.swap(drop_challenger=True)
    assert scorer.challenger is None
    assert "challenger" not in scorer.score_batch(records)[0]


def test_model_holder_hot_swap(tmp_path, caplog):
    d = tmp_path / "live"
    first = _save(1, d)
    holder = ModelHolder(d)
    assert holder.model.version == first["version"]
    assert holder.maybe_reload() is False  # nothing changed

    second = _save(2, d)
    assert holder.maybe_reload() is True
    assert holder.model.version == second["version"] != first["version"]
    assert holder.maybe_reload() is False

    # A corrupt metadata file is refused, logged, and the running model kept.
    good_meta = (d / "metadata.json").read_text()
    (d / "metadata.json").write_text('{"version": "broken", ')
    with caplog.at_level(logging.ERROR, logger="streams.stage2.scoring"):
        assert holder.maybe_reload() is False
    assert holder.model.version == second["version"]
    assert "refusing new model" in caplog.text
    assert holder.last_error and "not valid JSON" in holder.last_error
    assert holder.maybe_reload() is False  # not retried until the files change again

    # Fixed: the same version comes back, nothing to swap.
    (d / "metadata.json").write_text(good_meta + "\n")
    assert holder.maybe_reload() is False
    assert holder.last_error is None

    # A model whose features differ from what stage 1 sends is refused.
    save_model_dir(_booster(3, MODEL_FEATURES[:-1]), {"feature_names": MODEL_FEATURES[:-1]}, d)
    assert holder.maybe_reload() is False
    assert "expects features" in (holder.last_error or "")
    assert holder.model.version == second["version"]

    # A good model after the bad one is picked up.
    third = _save(4, d)
    assert holder.maybe_reload() is True
    assert holder.model.version == third["version"]


def test_model_holder_refuses_a_bad_start(tmp_path):
    with pytest.raises(ModelError):
        ModelHolder(tmp_path / "absent")
    _save(1, tmp_path / "m")
    with pytest.raises(ModelError, match="expects features"):
        ModelHolder(tmp_path / "m", expected_features=MODEL_FEATURES[::-1])


def test_model_thresholds_decide_for_each_model(tmp_path):
    """With ``thresholds: model`` the champion's decisions use its recorded thresholds and the
    challenger's use its own."""
    names = MODEL_FEATURES
    a, b = tmp_path / "a", tmp_path / "b"
    save_model_dir(
        _booster(1),
        {"feature_names": names, "policy": {"review_threshold": 0.0, "decline_threshold": 1.0}},
        a,
        name="ma",
    )
    save_model_dir(
        _booster(2),
        {"feature_names": names, "policy": {"review_threshold": 0.0, "decline_threshold": 0.0}},
        b,
        name="mb",
    )
    policy = DecisionPolicy(0.3, 0.8, from_model=True)
    out = Scorer(RiskModel.load(a), policy, RiskModel.load(b)).score_batch(_records(50))
    assert {d["action"] for d in out} == {"review"}
    assert {d["challenger"]["action"] for d in out} == {"decline"}


def test_a_review_floor_from_stage_1_raises_approve_to_review_only(models):
    records = _records(40)
    policy = DecisionPolicy(review_threshold=0.5, decline_threshold=0.9)
    plain = Scorer(models[0], policy).score_batch(records)
    floored = Scorer(models[0], policy).score_batch(
        [{**r, "min_action": "review"} for r in records]
    )
    for before, after in zip(plain, floored, strict=True):
        assert after["score"] == before["score"]
        expected = "review" if before["action"] == "approve" else before["action"]
        assert after["action"] == expected
    assert {d["action"] for d in plain} >= {"approve"}
