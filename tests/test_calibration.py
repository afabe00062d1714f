"""Calibration of confidence scores: the map, its fit, its validation."""
import math
import random

import pytest

from spacy_gner.calibration import Calibration, fit, logit, sigmoid
from spacy_gner.metrics import calibration as reliability


def overconfident(count: int, seed: int = 0):
    """(score, correct) pairs of a model whose true accuracy at score s is
    sigmoid(0.5 * logit(s) - 0.4): right far less often than it says."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        score = rng.betavariate(5, 1)  # mostly high, as a fine-tuned model's scores are
        pairs.append((score, rng.random() < sigmoid(0.5 * logit(score) - 0.4)))
    return pairs


def test_the_identity_changes_nothing_and_the_map_keeps_the_ranking():
    assert Calibration()(0.37) == pytest.approx(0.37)
    soften = Calibration(0.5, -0.2)
    scores = [0.01, 0.2, 0.5, 0.9, 0.999]
    assert [soften(s) for s in scores] == sorted(soften(s) for s in scores)
    assert soften.temperature == 2.0
    assert soften.scores([0.2, None]) == [soften(0.2), None]
    assert 0.0 < soften(0.0) < soften(1.0) < 1.0  # certain scores stay finite


def test_fit_recovers_a_known_miscalibration_and_removes_the_error():
    pairs = overconfident(4000)
    fitted = fit(pairs)
    assert fitted.slope == pytest.approx(0.5, abs=0.12)
    assert fitted.intercept == pytest.approx(-0.4, abs=0.25)
    held_out = overconfident(4000, seed=1)
    before = reliability(held_out)["ece"]
    after = reliability([(fitted(s), c) for s, c in held_out])["ece"]
    assert before > 0.1 and after < 0.03


def test_fit_leaves_calibrated_scores_nearly_alone():
    rng = random.Random(2)
    pairs = [(s, rng.random() < s) for s in (rng.random() for _ in range(4000))]
    fitted = fit(pairs)
    assert fitted.slope == pytest.approx(1.0, abs=0.15) and abs(fitted.intercept) < 0.15


def test_fit_stays_finite_on_one_sided_or_tiny_data():
    for pairs in ([(0.9, True)] * 5, [(0.9, False)] * 5, [(0.2, True), (0.8, False)]):
        fitted = fit(pairs)
        assert math.isfinite(fitted.slope) and fitted.slope > 0 and math.isfinite(fitted.intercept)
    with pytest.raises(ValueError, match="no scored candidates"):
        fit([])


def test_bad_calibrations_are_refused_by_name():
    with pytest.raises(ValueError, match="positive slope"):
        Calibration(0.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        Calibration(1.0, float("nan"))
    with pytest.raises(ValueError, match=r"\[slope, intercept\]"):
        Calibration.from_list([1.0])
    assert Calibration.from_list(Calibration(2.0, 0.5).to_list()) == Calibration(2.0, 0.5)


def test_fit_converges_where_plain_newton_steps_overshoot():
    # scores piled up at certainty (log-odds at the clip), most of them right, and a spread
    # below: undamped Newton steps from the identity overshoot here
    rng = random.Random(3)
    pairs = [(1.0, rng.random() < 0.8) for _ in range(900)]
    pairs += [(s, rng.random() < s * 0.7) for s in (rng.uniform(0.3, 0.999) for _ in range(600))]
    fitted = fit(pairs)
    assert 0.01 < fitted.slope < 10 and abs(fitted.intercept) < 20
    assert fitted(1.0) == pytest.approx(0.8, abs=0.05)
    assert reliability([(fitted(s), c) for s, c in pairs])["ece"] < reliability(pairs)["ece"]
