"""Calibration of entity confidence scores: Platt scaling on the score's log-odds.

A fine-tuned model's entity probabilities rank well but are overconfident. A `Calibration`
maps a probability `p` to `sigmoid(slope * logit(p) + intercept)`: a temperature `1 / slope`
on the model's log-odds of the entity being right, and a shift. It is monotone, so it keeps
the ranking, and it is fitted by `fit` on (score, correct) pairs of held-out sentences
(`python -m training.calibrate`).
"""
import math
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

_EPSILON = 1e-6  # scores are clipped to [eps, 1 - eps] before their log-odds are taken


def logit(probability: float) -> float:
    """The log-odds of a probability, clipped away from 0 and 1."""
    p = min(max(probability, _EPSILON), 1.0 - _EPSILON)
    return math.log(p / (1.0 - p))


def sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


@dataclass(frozen=True)
class Calibration:
    """`sigmoid(slope * logit(score) + intercept)`; the identity is slope 1, intercept 0."""

    slope: float = 1.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slope) and math.isfinite(self.intercept)) or self.slope <= 0:
            raise ValueError(f"a calibration needs a finite, positive slope and a finite "
                             f"intercept, got slope {self.slope!r}, intercept {self.intercept!r}")

    def __call__(self, score: float) -> float:
        return sigmoid(self.slope * logit(score) + self.intercept)

    def scores(self, scores: Sequence[Optional[float]]) -> List[Optional[float]]:
        """Each score calibrated; None (unscored) stays None."""
        return [None if score is None else self(score) for score in scores]

    @property
    def temperature(self) -> float:
        """The temperature on the log-odds, 1 / slope: above 1 softens overconfident scores."""
        return 1.0 / self.slope

    def to_list(self) -> List[float]:
        return [self.slope, self.intercept]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> "Calibration":
        if len(values) != 2:
            raise ValueError(f"a calibration is [slope, intercept], got {values!r}")
        return cls(float(values[0]), float(values[1]))


def _softplus(value: float) -> float:
    """log(1 + exp(value)), without overflow."""
    return max(value, 0.0) + math.log1p(math.exp(-abs(value)))


def fit(pairs: Iterable[Tuple[float, bool]], iterations: int = 100, ridge: float = 1e-3) -> Calibration:
    """The calibration that maximises the likelihood of the (score, correct) pairs: logistic
    regression of correctness on the scores' log-odds, by Newton's method with a backtracking
    line search (each step lowers the loss, so it converges from any data), with a small
    ridge penalty that pulls towards the identity (so one-sided or tiny data stay finite)."""
    points = [(logit(score), 1.0 if correct else 0.0) for score, correct in pairs]
    if not points:
        raise ValueError("no scored candidates to fit a calibration on")

    def loss(slope: float, intercept: float) -> float:
        penalty = ridge / 2 * ((slope - 1.0) ** 2 + intercept ** 2)
        return penalty + sum(_softplus(slope * x + intercept) - y * (slope * x + intercept)
                             for x, y in points)

    slope, intercept = 1.0, 0.0
    current = loss(slope, intercept)
    for _ in range(iterations):
        # gradient and Hessian of the penalised negative log-likelihood
        g_slope, g_intercept = ridge * (slope - 1.0), ridge * intercept
        h_ss, h_si, h_ii = ridge, 0.0, ridge
        for x, y in points:
            p = sigmoid(slope * x + intercept)
            w = p * (1.0 - p)
            g_slope += (p - y) * x
            g_intercept += p - y
            h_ss += w * x * x
            h_si += w * x
            h_ii += w
        det = h_ss * h_ii - h_si * h_si
        step_slope = (h_ii * g_slope - h_si * g_intercept) / det
        step_intercept = (h_ss * g_intercept - h_si * g_slope) / det
        decrease = g_slope * step_slope + g_intercept * step_intercept  # > 0: a descent step
        size = 1.0
        while size > 1e-10:
            trial = loss(slope - size * step_slope, intercept - size * step_intercept)
            if trial <= current - 1e-4 * size * decrease:
                break
            size /= 2
        else:
            break  # no step lowers the loss: at the minimum, to rounding
        slope, intercept = slope - size * step_slope, intercept - size * step_intercept
        improvement, current = current - trial, trial
        if improvement < 1e-12 * max(1.0, abs(current)):
            break
    # a negative slope would reverse the ranking: scores that carry no signal get a flat map
    return Calibration(max(slope, _EPSILON), intercept)
