"""The front's hypervolume: exact figures of hand-checked fronts, in two and three objectives."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from lglsearch.search.pareto import hypervolume

# accuracy is maximised, latency and energy minimised; the reference is the worst corner
REF = {"accuracy": 0.0, "latency": 10.0, "energy": 4.0}


def test_two_objective_staircase():
    front = pd.DataFrame(
        {
            "accuracy": [0.6, 0.9, 0.5, 0.95, 0.9],
            "latency_ms": [2.0, 6.0, 4.0, 12.0, 6.0],
            "energy_mj": 1.0,
        }
    )
    # (0.5, 4 ms) is dominated by (0.6, 2 ms), (0.95, 12 ms) lies beyond the 10 ms reference and the
    # last row repeats the second: none adds anything. The staircase: 2..6 ms at 0.6 = 4 x 0.6 = 2.4,
    # 6..10 ms at 0.9 = 4 x 0.9 = 3.6; 6.0 in all
    assert hypervolume(front, ("accuracy", "latency"), REF) == pytest.approx(6.0)
    assert hypervolume(front.iloc[[0, 2, 3]], ("accuracy", "latency"), REF) == pytest.approx(8 * 0.6)
    # one objective: the length from the reference to the best row, 0.95 (no latency bound then)
    assert hypervolume(front, ("accuracy",), REF) == pytest.approx(0.95)
    assert hypervolume(front.iloc[[3]], ("accuracy", "latency"), REF) == 0.0


THREE = pd.DataFrame(
    {
        "accuracy": [0.5, 0.25, 0.75, 0.2, 0.9],
        "latency_ms": [1.0, 2.0, 3.0, 3.0, 10.5],
        "energy_mj": [3.0, 1.0, 2.0, 3.0, 0.5],
    }
)


def test_three_objective_front_by_inclusion_exclusion():
    ref = {"accuracy": 0.0, "latency": 4.0, "energy": 4.0}
    # each row's box reaches the reference: accuracy 0..a, latency l..4, energy e..4
    #   A (0.5, 1, 3):  0.5  x 3 x 1 = 1.5
    #   B (0.25, 2, 1): 0.25 x 2 x 3 = 1.5
    #   E (0.75, 3, 2): 0.75 x 1 x 2 = 1.5
    # pairwise overlaps (the smaller accuracy, the larger latency and energy):
    #   A^B: 0.25 x 2 x 1 = 0.5,  A^E: 0.5 x 1 x 1 = 0.5,  B^E: 0.25 x 1 x 2 = 0.5
    #   A^B^E: 0.25 x 1 x 1 = 0.25
    # union: 4.5 - 1.5 + 0.25 = 3.25. (0.2, 3, 3) is dominated by B; (0.9, 10.5, 0.5) lies beyond
    # the latency reference: neither adds anything.
    assert hypervolume(THREE, ("accuracy", "latency", "energy"), ref) == pytest.approx(3.25)
    # the volume does not depend on the order of the objectives, nor of the rows
    for order in itertools.permutations(("accuracy", "latency", "energy")):
        assert hypervolume(THREE.iloc[::-1], order, ref) == pytest.approx(3.25)
    # without A: 1.5 + 1.5 - 0.5 = 2.5
    assert hypervolume(THREE.iloc[1:], ("accuracy", "latency", "energy"), ref) == pytest.approx(2.5)


def test_agrees_with_an_independent_implementation_on_random_fronts():
    wfg = pytest.importorskip("optuna._hypervolume")  # Optuna's WFG, only as a cross-check
    compute = getattr(wfg, "compute_hypervolume", None)
    if compute is None:
        pytest.skip("this Optuna has no optuna._hypervolume.compute_hypervolume")
    rng = np.random.default_rng(0)
    objectives = ("accuracy", "latency", "energy")
    for n, d in itertools.product((1, 5, 40), (2, 3)):
        frame = pd.DataFrame(
            {"accuracy": rng.uniform(0, 1, n), "latency_ms": rng.uniform(0, 10, n), "energy_mj": rng.uniform(0, 4, n)}
        )
        losses = frame[["accuracy", "latency_ms", "energy_mj"]].to_numpy()[:, :d] * np.array([-1, 1, 1])[:d]
        ref = np.array([0.0, 10.0, 4.0])[:d]
        expected = compute(losses[np.all(losses < ref, axis=1)], ref)
        assert hypervolume(frame, objectives[:d], REF) == pytest.approx(expected, rel=1e-9), (n, d)


def test_a_difference_is_claimed_only_beyond_two_standard_errors():
    from lglsearch.search.pareto import CLAIM_SE, difference_se, distinguishable

    se = difference_se(0.003, 0.004)  # a 3-4-5 triangle: 0.005
    assert se == pytest.approx(0.005)
    assert CLAIM_SE == 2
    assert not distinguishable(0.0100, se)  # exactly two standard errors: not yet
    assert distinguishable(0.0101, se) and distinguishable(-0.0101, se)  # either sign
    assert not distinguishable(0.0099, se)
