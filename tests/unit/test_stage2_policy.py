import numpy as np
import pytest

from streams.errors import ConfigError
from streams.stage2.policy import DecisionPolicy
from tests.support import REPO


def test_thresholds_are_inclusive_lower_bounds():
    p = DecisionPolicy(review_threshold=0.3, decline_threshold=0.8)
    assert p.decide(0.0) == "approve"
    assert p.decide(0.2999999) == "approve"
    assert p.decide(0.3) == "review"
    assert p.decide(0.7999999) == "review"
    assert p.decide(0.8) == "decline"
    assert p.decide(1.0) == "decline"


def test_nan_score_goes_to_review():
    p = DecisionPolicy()
    assert p.decide(float("nan")) == "review"
    assert p.decide_many(np.array([np.nan])) == ["review"]


def test_decide_many_matches_decide():
    p = DecisionPolicy(review_threshold=0.25, decline_threshold=0.75)
    scores = np.array([0.0, 0.2499, 0.25, 0.5, 0.7499, 0.75, 0.99, 1.0, np.nan])
    assert p.decide_many(scores) == [p.decide(float(s)) for s in scores]
    assert p.decide_many(np.array([])) == []


def test_equal_thresholds_remove_the_review_band():
    p = DecisionPolicy(review_threshold=0.5, decline_threshold=0.5)
    assert p.decide_many(np.array([0.49, 0.5])) == ["approve", "decline"]


def test_repository_policy_file_loads():
    p = DecisionPolicy.load(REPO / "config" / "policy.yaml")
    assert 0.0 <= p.review_threshold <= p.decline_threshold <= 1.0
    assert p.top_reasons == 3


def test_load_reads_values(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("review_threshold: 0.1\ndecline_threshold: 0.9\ntop_reasons: 5\n")
    assert DecisionPolicy.load(f) == DecisionPolicy(0.1, 0.9, 5)
    f.write_text("review_threshold: 0\ndecline_threshold: 1\n")
    assert DecisionPolicy.load(f) == DecisionPolicy(0.0, 1.0, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("review_threshold: 0.9\ndecline_threshold: 0.5\n", "must not exceed"),
        ("review_threshold: -0.1\ndecline_threshold: 0.5\n", "in [0, 1]"),
        ("review_threshold: 0.1\ndecline_threshold: 1.5\n", "in [0, 1]"),
        ("review_threshold: high\ndecline_threshold: 0.5\n", "in [0, 1]"),
        ("review_threshold: .nan\ndecline_threshold: 0.5\n", "in [0, 1]"),
        ("review_threshold: true\ndecline_threshold: 0.5\n", "in [0, 1]"),
        ("decline_threshold: 0.5\n", "missing review_threshold"),
        ("review_threshold: 0.1\ndecline_threshold: 0.5\nfoo: 1\n", "unknown key"),
        ("review_threshold: 0.1\ndecline_threshold: 0.5\ntop_reasons: -1\n", "top_reasons"),
        ("- 0.1\n- 0.5\n", "mapping"),
        ("review_threshold: [0.1\n", "cannot read"),
    ],
)
def test_bad_policy_files_name_the_file(tmp_path, text, message):
    f = tmp_path / "bad_policy.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        DecisionPolicy.load(f)
    assert "bad_policy.yaml" in str(err.value)
    assert message in str(err.value)


def test_missing_policy_file(tmp_path):
    with pytest.raises(ConfigError, match="policy file not found"):
        DecisionPolicy.load(tmp_path / "nope.yaml")


def test_constructor_validates():
    with pytest.raises(ConfigError):
        DecisionPolicy(review_threshold=0.9, decline_threshold=0.1)


def test_thresholds_from_the_model(tmp_path, caplog):
    """``thresholds: model``: each model's recorded thresholds; the file's for a model that
    records none (one warning per model version)."""
    f = tmp_path / "p.yaml"
    f.write_text("thresholds: model\nreview_threshold: 0.3\ndecline_threshold: 0.8\n")
    p = DecisionPolicy.load(f)
    assert p.from_model
    m = p.for_model(
        {"version": "m1", "policy": {"review_threshold": 0.05, "decline_threshold": 0.6}}
    )
    assert (m.review_threshold, m.decline_threshold, m.from_model) == (0.05, 0.6, False)
    assert m.decide_many(np.array([0.01, 0.05, 0.7])) == ["approve", "review", "decline"]
    for _ in range(2):
        old = p.for_model({"version": "m0"})
    assert (old.review_threshold, old.decline_threshold) == (0.3, 0.8)
    assert sum("records no valid policy thresholds" in r.message for r in caplog.records) == 1
    bad = p.for_model(
        {"version": "m2", "policy": {"review_threshold": 0.9, "decline_threshold": 0.1}}
    )
    assert (bad.review_threshold, bad.decline_threshold) == (0.3, 0.8)
    fixed = DecisionPolicy(0.3, 0.8)
    assert fixed.for_model({"policy": {"review_threshold": 0.1, "decline_threshold": 0.2}}) is fixed
    f.write_text("thresholds: sometimes\nreview_threshold: 0.3\ndecline_threshold: 0.8\n")
    with pytest.raises(ConfigError, match="thresholds must be one of"):
        DecisionPolicy.load(f)


def test_repository_policy_follows_the_model():
    p = DecisionPolicy.load(REPO / "config" / "policy.yaml")
    assert p.from_model
    import json

    meta = json.loads((REPO / "models" / "default" / "metadata.json").read_text())
    resolved = p.for_model(meta)
    assert resolved.review_threshold == meta["policy"]["review_threshold"]
