"""Spec 1.8: the log-log slope of each module's analytic MACs in N (square maps, side 32..128).

The contract test checks ``flops`` against FlopCounterMode at small sizes; this checks the order.
"""

import math

import pytest

import segattn

# expected slope in N, tolerance; modules not listed are checked only for slope in [0.9, 2.1]
EXPECTED = {
    "nonlocal": 2.0, "nonlocal_gaussian": 2.0, "nonlocal_concat": 2.0, "danet_pam": 2.0, "ocnet_base": 2.0,
    "psanet": 2.0, "nonlocal_dot": 1.0, "danet_cam": 1.0, "ccnet": 1.5, "ema": 1.0, "a2": 1.0, "glore": 1.0,
    "latentgnn": 1.0, "ann_apnb": 1.0, "cgnl": 1.0, "local_relation": 1.0, "dgmn": 1.0, "ppm": 1.0,
    "aspp": 1.0, "graphrep": 1.0, "sgr": 1.0, "apcnet": 1.0, "dnl": 2.0, "gcnet": 1.0, "ocr": 1.0,
    "hamburger": 1.0, "encnet": 1.0, "dmnet": 1.0,
}
SIDES = (32, 48, 64, 96, 128)
# PSANet's mask-prediction conv has a fixed (59 x 59) output, linear in N; its N'^2 aggregation
# dominates only on larger maps.
LARGE_SIDES = {"psanet": (256, 384, 512, 768, 1024)}


def slope(name: str) -> float:
    module = segattn.create_module(name, 16)
    sides = LARGE_SIDES.get(name, SIDES)
    xs = [math.log(s * s) for s in sides]
    ys = [math.log(module.flops(s, s)) for s in sides]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


@pytest.mark.parametrize("name", segattn.list_modules())
def test_cost_order(name):
    s = slope(name)
    if name in EXPECTED:
        assert abs(s - EXPECTED[name]) < 0.2, f"{name}: MACs grow as N^{s:.2f}, expected N^{EXPECTED[name]}"
    else:
        assert 0.9 < s < 2.1


def test_isa_sqrt_n_setting_is_n_to_the_1_5():
    """Spec 1.7 (d): with group size l = g = sqrt(N) the affinity cost is O(N^1.5)."""
    roots = (16, 24, 32, 48, 64)  # side s = r^2, down_factor r -> l = g = r^2 = sqrt(N)
    xs = [math.log(r**4) for r in roots]
    ys = [math.log(segattn.create_module("isa", 16, down_factor=(r, r)).flops(r * r, r * r)) for r in roots]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    s = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    assert abs(s - 1.5) < 0.1, f"ISA at l = g = sqrt(N) grows as N^{s:.2f}"
