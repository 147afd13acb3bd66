import json
from datetime import date

import numpy as np
import polars as pl
import pytest

from streams.data.handbook import read_handbook
from streams.data.simulate import simulate, write_csv
from streams.errors import DataError, ModelError
from streams.features.names import DAY_MS, MODEL_FEATURES
from streams.features.offline import compute_features
from streams.online.supervised import WARM_START_FILE, OnlineClassifier
from streams.rules.loader import load_rules
from streams.settings import load_settings
from streams.stage1.screen import Screener
from streams.stage2.model import RiskModel
from streams.training.model_card import render_card
from streams.training.search import SearchSpace
from streams.training.train import train_model
from streams.training.validation import card_precision_at_k_of_arrays, known_card_mask
from tests.support import REPO

START, END = date(2018, 4, 15), date(2018, 5, 1)  # validation: the last 5 days, 04-26 .. 05-01
# a small grid keeps the tests quick; the search itself is tested in test_training_search.py
SPACE = SearchSpace(max_depth=(2, 3), learning_rate=(0.3,), scale_pos_weight=(1.0,), max_rounds=60)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    frame = simulate(customers=150, terminals=300, days=45, seed=3)
    return read_handbook(write_csv(frame, tmp_path_factory.mktemp("sim") / "tiny.csv"))


@pytest.fixture(scope="module")
def features(history):
    return compute_features(history)


@pytest.fixture(scope="module")
def trained(history, features, tmp_path_factory):
    out = tmp_path_factory.mktemp("model_a")
    meta = train_model(history, START, END, out, seed=11, features=features, space=SPACE)
    return out, meta


def test_training_is_deterministic(history, features, trained, tmp_path):
    out_a, meta_a = trained
    # the second run featurises on its own: precomputed features change nothing
    meta_b = train_model(history, START, END, tmp_path / "b", seed=11, space=SPACE)
    assert (out_a / "model.ubj").read_bytes() == (tmp_path / "b" / "model.ubj").read_bytes()
    assert meta_a["version"] == meta_b["version"]
    assert meta_a["metrics"] == meta_b["metrics"]
    X = features.to_numpy()[:300]
    np.testing.assert_array_equal(
        RiskModel.load(out_a).predict(X)[0], RiskModel.load(tmp_path / "b").predict(X)[0]
    )
    meta_c = train_model(
        history, START, END, tmp_path / "c", seed=12, features=features, space=SPACE
    )
    assert meta_c["version"] != meta_a["version"]


def test_model_directory_contents(trained):
    out, meta = trained
    for name in (
        "model.ubj",
        "metadata.json",
        "MODEL_CARD.md",
        "pr_curve.png",
        "feature_importance.png",
    ):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "metadata.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    assert meta["feature_names"] == MODEL_FEATURES
    assert meta["training_window"] == {"start": "2018-04-15", "end": "2018-05-01"}
    assert meta["validation_window"]["start"] == "2018-04-26"
    assert meta["validation_window"]["end"] == "2018-05-01"
    assert meta["search"]["validation_days"] == 5
    assert sum(t["chosen"] for t in meta["search"]["trials"]) == 1
    assert meta["search"]["chosen"]["rounds"] == meta["training"]["num_trees"]
    policy = meta["policy"]
    assert 0.0 <= policy["review_threshold"] <= policy["decline_threshold"] <= 1.0
    assert policy["review_capacity_cards_per_day"] == 100.0
    # the data ends 2018-05-15: the week after the delay (05-08 .. 05-15) is the holdout
    assert meta["holdout"]["start"] == "2018-05-08" and meta["holdout"]["end"] == "2018-05-15"
    assert meta["label_delay_days"] == 7
    assert meta["seed"] == 11 and meta["params"]["seed"] == 11
    assert meta["params"]["tree_method"] == "hist"
    for key in ("auc_roc", "average_precision", "card_precision_at_100"):
        assert 0.0 <= meta["metrics"][key] <= 1.0
    balance = meta["class_balance"]
    assert balance["train"]["rows"] > balance["train"]["frauds"] > 0
    assert balance["validation"]["rows"] > balance["validation"]["frauds"] > 0
    assert {"xgboost", "numpy", "polars", "python"} <= set(meta["libraries"])
    assert meta["created_at"]
    assert meta["training"]["num_trees"] == meta["training"]["best_iteration"] + 1
    model = RiskModel.load(out)
    assert model.version == meta["version"]
    assert model.booster.num_boosted_rounds() == meta["training"]["num_trees"]
    model.check_features(MODEL_FEATURES)
    card = (out / "MODEL_CARD.md").read_text()
    assert meta["version"] in card
    assert "(pr_curve.png)" in card and "(feature_importance.png)" in card
    assert "## Limitations" in card and "## Intended use" in card


def test_the_card_names_the_population_the_model_learnt(trained):
    """The card's limitation on the training population follows ``training_rows``: a model of
    stage 1's forwards warns about rule changes, an every-row model about the shifted scores."""
    _, meta = trained
    forwarded = render_card({**meta, "training_rows": "forwarded by stage 1"}, {})
    every = render_card({**meta, "training_rows": "all"}, {})
    assert "retrain after such a change" in forwarded and "shifted upwards" not in forwarded
    assert "shifted upwards" in every and "retrain after such a change" not in every


def test_the_model_directory_warm_starts_stage_one(history, trained, tmp_path):
    """train writes the online classifier learnt on the training window; a screener of that
    model directory starts from it (and ranks its window's frauds first), or from nothing when
    the warm start is off."""
    out, meta = trained
    warm = meta["stage1_warm_start"]
    assert warm["file"] == WARM_START_FILE and warm["labels_learned"] > 0
    state = json.loads((out / WARM_START_FILE).read_text())
    assert state["features"] == MODEL_FEATURES and state["learned"] == warm["labels_learned"]
    rules = load_rules(REPO / "rules")
    settings = load_settings(bootstrap_servers="127.0.0.1:1", model_dir=out)
    screener = Screener.from_settings(settings, rules)
    assert screener.classifier.learned == warm["labels_learned"]
    cold = Screener.from_settings(settings.model_copy(update={"stage1_warm_start": False}), rules)
    assert cold.classifier.learned == 0
    # the warm-started classifier ranks the training window's frauds well above its genuines
    X = compute_features(history).to_numpy()
    y = history["TX_FRAUD"].to_numpy().astype(bool)
    p = screener.classifier.predict_batch(X)
    assert np.median(p[y]) > np.quantile(p[~y], 0.9)
    (tmp_path / WARM_START_FILE).write_text(json.dumps({**state, "features": ["x"]}))
    with pytest.raises(ModelError, match="online classifier state is for features"):
        OnlineClassifier().load(tmp_path / WARM_START_FILE)


def test_validation_metrics_match_scoring_path(history, features, trained):
    out, meta = trained
    ts = history["ts_ms"].to_numpy()
    model = RiskModel.load(out)
    day0 = int(pl.Series([date(2018, 4, 26)]).cast(pl.Datetime("ms")).cast(pl.Int64)[0])
    in_valid = (ts >= day0) & (ts < day0 + 5 * DAY_MS)
    assert meta["class_balance"]["validation"]["rows"] + meta["class_balance"][
        "validation_known_cards_removed_rows"
    ] == int(in_valid.sum())
    scores, _ = model.predict(features.to_numpy()[in_valid])
    assert np.all((scores >= 0) & (scores <= 1))


def test_bad_inputs(history, tmp_path):
    with pytest.raises(DataError, match="TX_FRAUD"):
        train_model(history.drop("TX_FRAUD"), START, END, tmp_path)
    with pytest.raises(DataError, match="empty training window"):
        train_model(history, END, START, tmp_path)
    with pytest.raises(DataError, match="no validation window"):
        train_model(
            history,
            date(2018, 5, 1),
            date(2018, 5, 2),
            tmp_path,
            features=compute_features(history),
        )
    with pytest.raises(DataError, match="precomputed"):
        train_model(history, START, END, tmp_path, features=pl.DataFrame({"x": [1.0]}))


def test_card_precision_at_k():
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    cards = np.array(["a", "a", "b", "c", "a", "b", "c"])
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.99, 0.5, 0.4])
    # day 0, top 2 cards by best score: a (0.9, fraud), b (0.8, genuine) -> 1/2; a detected
    # day 1, a dropped: b (0.5, genuine), c (0.4, fraud) -> 1/2
    assert card_precision_at_k_of_arrays(day, cards, y, scores, k=2) == pytest.approx(0.5)
    assert card_precision_at_k_of_arrays(day, cards, y, scores, k=1) == pytest.approx(0.5)
    assert card_precision_at_k_of_arrays(day[:0], cards[:0], y[:0], scores[:0]) is None


def test_known_card_mask_respects_the_delay():
    ts = np.array([0, 1, 9, 10, 10]) * DAY_MS
    cards = np.array(["a", "b", "c", "a", "b"])
    fraud = np.array([1, 0, 1, 0, 0])
    evaluate = np.array([False, False, False, True, True])
    # day 10: a's fraud on day 0 is known (0 < 10 − 7); c's fraud on day 9 is not yet
    assert known_card_mask(ts, cards, fraud, evaluate, since_ms=0).tolist() == [
        False,
        False,
        False,
        True,
        False,
    ]
    assert not known_card_mask(ts, cards, fraud, evaluate, since_ms=DAY_MS).any()


def test_stage2_learns_from_the_rows_stage1_forwarded(history, features, trained, tmp_path):
    """With stage 1's verdicts, the model, its validation and its policy see only the rows stage
    1 forwarded in the window (the ones stage 2 scores); stage 1's warm start sees them all."""
    from streams.training.train import stage1_verdicts

    settings = load_settings(None)
    verdict_features, forwarded = stage1_verdicts(history, settings, REPO / "rules")
    # stage 1's features are the offline ones: one feature code for both
    np.testing.assert_allclose(verdict_features.to_numpy(), features.to_numpy())
    ts = history["ts_ms"].to_numpy()
    window = (ts >= (START - date(1970, 1, 1)).days * DAY_MS) & (
        ts < (END - date(1970, 1, 1)).days * DAY_MS
    )
    assert 0 < forwarded[window].sum() < window.sum()
    meta = train_model(
        history, START, END, tmp_path, seed=11, features=features, forwarded=forwarded, space=SPACE
    )
    y = history["TX_FRAUD"].to_numpy()
    assert meta["training_rows"] == "forwarded by stage 1"
    assert meta["class_balance"]["train"] == {
        "rows": int((window & forwarded).sum()),
        "frauds": int(y[window & forwarded].sum()),
    }
    assert meta["class_balance"]["window"]["rows"] == int(window.sum())
    assert (
        meta["class_balance"]["validation"]["rows"]
        < trained[1]["class_balance"]["validation"]["rows"]
    )
    assert (
        meta["stage1_warm_start"]["labels_learned"]
        == trained[1]["stage1_warm_start"]["labels_learned"]
    )
    assert meta["version"] != trained[1]["version"]
    with pytest.raises(DataError, match="verdicts"):
        train_model(history, START, END, tmp_path / "x", features=features, forwarded=forwarded[:9])


def test_forwarded_rows_without_frauds_fall_back_to_every_row(history, features, trained, tmp_path):
    """A stage 1 that forwarded no fraud in the window leaves stage 2 nothing to learn from
    there: it learns every row, and the metadata says why."""
    genuine_only = history["TX_FRAUD"].to_numpy() == 0
    meta = train_model(
        history,
        START,
        END,
        tmp_path,
        seed=11,
        features=features,
        forwarded=genuine_only,
        space=SPACE,
    )
    assert meta["training_rows"] == "all (the rows stage 1 forwarded lack a class)"
    assert meta["class_balance"]["train"] == trained[1]["class_balance"]["train"]
    assert meta["version"] == trained[1]["version"]
