"""Alpha sweep (valuemech.evals.sweep): choosing the steering strength under drop and KL limits."""

from __future__ import annotations


def test_sweep_choice_is_strictly_under_the_drop_and_kl_limits():
    from valuemech.evals.sweep import choose

    def pt(alpha, base, acc, kl=0.0):
        return {"alpha": alpha, "accuracy": acc, "accuracy_drop": 100.0 * (base - acc), "kl": kl}

    # 100 * (0.3 - 0.25) is 4.999999999999999 in floats: exactly 5 points is not "under 5"
    curves = {"a": {"15": [pt(0.1, 0.3, 0.3), pt(0.2, 0.3, 0.25)]},
              "b": {"15": [pt(0.1, 0.7, 0.7), pt(0.2, 0.7, 0.6625)], "10": [pt(0.4, 0.7, 0.7, kl=2.0)]},
              "c": {"15": [pt(0.1, 0.7, 0.5)]}}
    got = choose(curves, max_drop=5.0, max_kl=1.0)
    assert got["a"]["alpha"] == 0.1 and got["b"] == {"layer": 15, **pt(0.2, 0.7, 0.6625)} and got["c"] is None
    assert choose(curves)["b"]["layer"] == 10  # without a KL limit the larger α at block 10 wins
