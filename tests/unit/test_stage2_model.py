import json
import shutil

import numpy as np
import pytest
import xgboost as xgb

from streams.errors import ModelError
from streams.features.names import MODEL_FEATURES
from streams.stage2.model import RiskModel, sigmoid
from streams.training.artifact import save_model_dir


def _random_booster(seed: int, names: list[str] = MODEL_FEATURES, rounds: int = 20) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, len(names)))
    y = (X[:, 0] + 0.5 * X[:, 3] - X[:, -1] + rng.normal(scale=0.5, size=600) > 1.0).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": seed, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(X, label=y, feature_names=names), num_boost_round=rounds)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    save_model_dir(_random_booster(1), {"feature_names": MODEL_FEATURES}, out, name="test")
    return out


@pytest.fixture(scope="module")
def model(model_dir):
    return RiskModel.load(model_dir)


@pytest.fixture(scope="module")
def X():
    X = np.random.default_rng(2).normal(size=(50, len(MODEL_FEATURES)))
    X[3, 5] = np.nan  # missing value, as XGBoost understands it
    return X


def test_load_sets_version_and_features(model):
    assert model.version.startswith("test-")
    assert model.feature_names == MODEL_FEATURES
    assert model.metadata["model_sha256"]


def test_contributions_sum_to_margin_and_score_is_sigmoid(model, X):
    scores, contribs = model.predict(X)
    assert contribs.shape == (len(X), len(MODEL_FEATURES) + 1)
    margin = model.booster.predict(xgb.DMatrix(X, feature_names=MODEL_FEATURES), output_margin=True)
    np.testing.assert_allclose(contribs.sum(axis=1), margin, atol=1e-5)
    np.testing.assert_allclose(scores, sigmoid(margin.astype(np.float64)), atol=1e-6)
    proba = model.booster.predict(xgb.DMatrix(X, feature_names=MODEL_FEATURES))
    np.testing.assert_allclose(scores, proba, atol=1e-6)


def test_approx_contributions_also_sum_to_margin(model_dir, model, X):
    approx = RiskModel.load(model_dir, approx_contribs=True)
    _, contribs = approx.predict(X)
    margin = model.booster.predict(xgb.DMatrix(X, feature_names=MODEL_FEATURES), output_margin=True)
    np.testing.assert_allclose(contribs.sum(axis=1), margin, atol=1e-5)
    exact, _ = model.predict(X)
    np.testing.assert_allclose(approx.predict(X)[0], exact, atol=1e-6)


def test_score_without_contributions_matches(model, X):
    np.testing.assert_allclose(model.score(X), model.predict(X)[0], atol=1e-6)
    assert model.score(X[:0]).shape == (0,)


def test_single_row_and_empty_batch(model, X):
    scores, contribs = model.predict(X[:1])
    assert scores.shape == (1,) and contribs.shape == (1, len(MODEL_FEATURES) + 1)
    scores, contribs = model.predict(np.empty((0, len(MODEL_FEATURES))))
    assert scores.shape == (0,)


def test_wrong_matrix_shape_is_refused(model):
    with pytest.raises(ModelError, match="matrix"):
        model.predict(np.zeros((2, 3)))


def test_reasons_are_top_positive_contributions(model, X):
    _, contribs = model.predict(X)
    for i in range(len(X)):
        reasons = model.reasons(X[i], contribs[i], top_k=3)
        assert len(reasons) <= 3
        values = [r["contribution"] for r in reasons]
        assert values == sorted(values, reverse=True)
        assert all(v > 0 for v in values)
        positive = np.sort(contribs[i, :-1][contribs[i, :-1] > 0])[::-1][:3]
        np.testing.assert_allclose(values, positive, atol=1e-6)
        for r in reasons:
            j = MODEL_FEATURES.index(r["feature"])
            assert r["contribution"] == pytest.approx(contribs[i, j], abs=1e-6)
            assert r["value"] == X[i, j] or (r["value"] is None and np.isnan(X[i, j]))
    assert model.reasons(X[0], contribs[0], top_k=0) == []
    many = model.reasons_many(X, contribs, 2)
    assert many == [model.reasons(X[i], contribs[i], 2) for i in range(len(X))]


def test_check_features_accepts_the_same_list(model):
    model.check_features(list(MODEL_FEATURES))


@pytest.mark.parametrize(
    ("names", "word"),
    [
        (MODEL_FEATURES[:-1], "missing ['TERMINAL_LAST_FRAUD_CARD_FRAUDS']"),
        ([*MODEL_FEATURES, "NEW_FEATURE"], "extra ['NEW_FEATURE']"),
        ([MODEL_FEATURES[1], MODEL_FEATURES[0], *MODEL_FEATURES[2:]], "different order"),
    ],
)
def test_check_features_refuses_mismatch(model, names, word):
    with pytest.raises(ModelError) as err:
        model.check_features(names)
    text = str(err.value)
    assert f"model {model.version} expects features" in text
    assert "stage 1 sends" in text
    assert word in text


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_load_errors(model_dir, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        RiskModel.load(tmp_path / "absent")

    d = _copy(model_dir, tmp_path / "no_model")
    (d / "model.ubj").unlink()
    with pytest.raises(ModelError, match=r"no model\.ubj"):
        RiskModel.load(d)

    d = _copy(model_dir, tmp_path / "no_meta")
    (d / "metadata.json").unlink()
    with pytest.raises(ModelError, match=r"no metadata\.json"):
        RiskModel.load(d)

    d = _copy(model_dir, tmp_path / "bad_json")
    (d / "metadata.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        RiskModel.load(d)

    d = _copy(model_dir, tmp_path / "no_names")
    meta = json.loads((d / "metadata.json").read_text())
    del meta["feature_names"]
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="feature_names"):
        RiskModel.load(d)

    d = _copy(model_dir, tmp_path / "other_bytes")
    (d / "model.ubj").write_bytes((d / "model.ubj").read_bytes() + b"x")
    with pytest.raises(ModelError, match="sha256"):
        RiskModel.load(d)

    d = _copy(model_dir, tmp_path / "garbage")
    (d / "model.ubj").write_bytes(b"garbage")
    meta = json.loads((d / "metadata.json").read_text())
    del meta["model_sha256"]
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a valid XGBoost model"):
        RiskModel.load(d)


def test_metadata_feature_count_must_match_booster(tmp_path):
    save_model_dir(_random_booster(3, rounds=2), {"feature_names": MODEL_FEATURES[:5]}, tmp_path)
    with pytest.raises(ModelError, match="features"):
        RiskModel.load(tmp_path)
