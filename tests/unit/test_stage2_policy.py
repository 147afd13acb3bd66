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
