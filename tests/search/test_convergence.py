"""The search's convergence verdict: entropy of the architecture distribution, stability of the
exported student."""
import math

import pytest

from nasdistill.search.convergence import convergence, entropy_fraction, stable_run


def test_entropy_fraction_of_uniform_and_peaked_distributions():
    choices = {"a": 5, "b": 5, "c": 2}
    h, frac = entropy_fraction({"a": math.log(5), "b": math.log(5), "c": math.log(2)}, choices)
    assert h == pytest.approx(2 * math.log(5) + math.log(2)) and frac == pytest.approx(1.0)
    assert entropy_fraction({"a": 0.0, "b": 0.0, "c": 0.0}, choices) == (0.0, 0.0)
    # one label halved: H / ln N = (ln 5 / 2 + ln 5 + ln 2) / (2 ln 5 + ln 2)
    _, frac = entropy_fraction({"a": math.log(5) / 2, "b": math.log(5), "c": math.log(2)}, choices)
    assert frac == pytest.approx((1.5 * math.log(5) + math.log(2)) / (2 * math.log(5) + math.log(2)))


def test_stable_run_counts_the_last_equal_entries():
    assert stable_run([]) == 0
    assert stable_run(["a"]) == 1
    assert stable_run(["a", "b", "b", "b"]) == 3
    assert stable_run(["b", "b", "a"]) == 1


def test_convergence_needs_a_stable_student_and_a_low_entropy():
    history = ["x", "y"] + ["z"] * 6     # 8 phi epochs, window 0.25 -> 2 needed, 6 stable
    ok = convergence(history, 0.4, 0.3, window=0.25, entropy_limit=0.5)
    assert ok["converged"] and ok["stable_epochs"] == 6 and ok["stable_needed"] == 2
    flat = convergence(history, 0.9, 0.001, window=0.25, entropy_limit=0.5)
    assert not flat["converged"] and "entropy is still 0.90" in flat["why"]
    moving = convergence(["x"] * 7 + ["y"], 0.2, 0.5, window=0.25, entropy_limit=0.5)
    assert not moving["converged"] and "most probable architecture changed within the last 2 of 8" in moving["why"]
    assert convergence(["x"] * 8, 0.2, 0.5, window=1.0, entropy_limit=0.5)["converged"]
    assert not convergence(["x"] * 7 + ["y"], 0.2, 0.5, window=1.0, entropy_limit=0.5)["converged"]
    short = convergence(["x"], 0.1, 0.9, window=0.25, entropy_limit=0.5)
    assert not short["converged"] and "too few" in short["why"]


def test_a_distribution_settled_outside_the_band_says_so():
    out = convergence(["x"] * 8, 0.2, 1e-4, window=0.25, entropy_limit=0.5, mode_in_band=False,
                      mode_cost=250_000)
    assert out["converged"] and not out["mode_in_band"]
    assert "costs 250,000, outside the target's band" in out["why"] and "p 0.0001" in out["why"]
