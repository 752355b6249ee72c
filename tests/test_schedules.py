"""pn.schedules: exact values at documented points, monotonicity, torch lr_scheduler twins, compile, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import purenn as pn
from purenn import schedules as S


def values(schedule, n: int) -> list[float]:
    return [float(schedule(t)) for t in range(n)]


def torch_lrs(make_scheduler, n: int, base_lr: float = 1.0) -> list[float]:
    """The lr torch.optim.lr_scheduler gives for steps 0 .. n-1 (read before each optimizer step)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def test_constant():
    sched = S.constant(0.3)
    assert values(sched, 3) == [0.3, 0.3, 0.3]
    assert sched(torch.tensor(7)).dtype == torch.float64


def test_linear_exact_at_ends_and_between():
    sched = S.linear(0.1, 0.3, transition_steps=4, transition_begin=2)
    # optax: (init - end) * (1 - clip(t - begin, 0, steps) / steps) + end
    assert values(sched, 8) == [
        0.1,
        0.1,
        0.1,
        pytest.approx(0.15),
        pytest.approx(0.2),
        pytest.approx(0.25),
        0.3,
        0.3,
    ]
    assert float(S.linear(0.0, 1e-3, 100)(100)) == 1e-3  # exact at the end
    assert float(S.linear(5.0, 1.0, 0)(10)) == 5.0  # no transition: init_value (as optax)


def test_cosine_decay_documented_points_and_monotone():
    sched = S.cosine_decay(0.1, decay_steps=100, alpha=0.1)
    # optax: init * ((1 - alpha) * 0.5 * (1 + cos(pi * min(t, T) / T)) + alpha)
    assert float(sched(0)) == 0.1
    assert float(sched(100)) == 0.1 * 0.1 and float(sched(500)) == 0.1 * 0.1
    assert float(sched(50)) == pytest.approx(0.1 * (0.9 * 0.5 + 0.1), rel=1e-15)
    assert float(sched(30)) == pytest.approx(
        0.1 * (0.9 * 0.5 * (1 + math.cos(math.pi * 0.3)) + 0.1), rel=1e-14
    )
    trajectory = values(sched, 120)
    assert all(a >= b for a, b in itertools.pairwise(trajectory))
    squared = S.cosine_decay(1.0, 10, exponent=2.0)
    assert float(squared(5)) == pytest.approx(0.25, rel=1e-15)


def test_warmup_cosine_decay_documented_points_and_monotone_phases():
    sched = S.warmup_cosine_decay(0.01, 1.0, warmup_steps=10, decay_steps=110, end_value=0.05)
    assert float(sched(0)) == 0.01
    assert float(sched(5)) == pytest.approx(0.01 + 0.5 * 0.99, rel=1e-15)
    assert float(sched(10)) == 1.0  # the peak, exactly, at the end of the warmup
    assert float(sched(60)) == pytest.approx(0.05 + 0.95 * 0.5, rel=1e-15)
    assert float(sched(110)) == 0.05 and float(sched(1000)) == 0.05
    trajectory = values(sched, 130)
    assert all(a <= b for a, b in itertools.pairwise(trajectory[:11]))  # warmup: rising
    assert all(a >= b for a, b in itertools.pairwise(trajectory[10:]))  # then falling
    no_warmup = S.warmup_cosine_decay(0.0, 2.0, warmup_steps=0, decay_steps=10)
    assert float(no_warmup(0)) == 2.0 and float(no_warmup(10)) == 0.0


def test_exponential_decay_points_staircase_begin_and_end_value():
    sched = S.exponential_decay(2.0, transition_steps=10, decay_rate=0.5)
    assert [float(sched(t)) for t in (0, 10, 20, 5)] == [
        2.0,
        1.0,
        0.5,
        pytest.approx(2.0 * 0.5**0.5),
    ]
    stairs = S.exponential_decay(2.0, 10, 0.5, transition_begin=5, staircase=True)
    assert [float(stairs(t)) for t in (0, 5, 14, 15, 25)] == [2.0, 2.0, 2.0, 1.0, 0.5]
    floored = S.exponential_decay(1.0, 1, 0.5, end_value=0.1)
    assert float(floored(2)) == 0.25 and float(floored(10)) == 0.1
    capped = S.exponential_decay(1.0, 1, 2.0, end_value=5.0)
    assert float(capped(2)) == 4.0 and float(capped(3)) == 5.0
    trajectory = values(sched, 50)
    assert all(a >= b for a, b in itertools.pairwise(trajectory))


def test_piecewise_constant_scales_from_each_boundary():
    sched = S.piecewise_constant(1.0, {20: 0.5, 10: 0.1})
    assert [float(sched(t)) for t in (0, 9, 10, 19, 20, 100)] == [1.0, 1.0, 0.1, 0.1, 0.05, 0.05]
    assert float(S.piecewise_constant(3.0)(5)) == 3.0


def test_join_restarts_the_count_at_each_boundary():
    warm = S.linear(0.0, 1.0, transition_steps=10)
    sched = S.join([warm, S.cosine_decay(1.0, 20), S.constant(0.01)], [10, 30])
    assert float(sched(5)) == 0.5 and float(sched(10)) == 1.0
    assert float(sched(20)) == pytest.approx(0.5, rel=1e-15)
    assert float(sched(29)) > 0 and float(sched(30)) == 0.01
    plain = S.join([lambda t: 1.0, lambda t: 2.0 * t], [3])  # plain functions work too
    assert values(plain, 6) == [1.0, 1.0, 1.0, 0.0, 2.0, 4.0]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            S.cosine_decay(0.1, decay_steps=49, alpha=0.05),  # torch's goes back up after T_max
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=49, eta_min=0.1 * 0.05),
        ),
        (
            S.linear(0.1 * 0.25, 0.1, transition_steps=12),
            lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=12),
        ),
        (
            S.exponential_decay(0.1, transition_steps=1, decay_rate=0.9),
            lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
        ),
        (
            S.exponential_decay(0.1, transition_steps=7, decay_rate=0.5, staircase=True),
            lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
        ),
        (
            S.piecewise_constant(0.1, {10: 0.1, 25: 0.1}),
            lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[10, 25], gamma=0.1),
        ),
    ],
    ids=["CosineAnnealingLR", "LinearLR", "ExponentialLR", "StepLR", "MultiStepLR"],
)
def test_equals_torch_lr_scheduler_over_a_trajectory(ours, theirs):
    reference = torch_lrs(theirs, 50, base_lr=0.1)
    # torch's schedulers are recursive (lr_t from lr_{t-1}), so they drift by a few ulps.
    assert values(ours, 50) == pytest.approx(reference, rel=1e-12, abs=1e-17)


@pytest.mark.parametrize(
    "count", [3, torch.tensor(3), torch.tensor(3, dtype=torch.int32), torch.tensor([3])]
)
def test_counts_as_ints_or_tensors_give_the_same_float64(count):
    sched = S.warmup_cosine_decay(0.0, 1.0, 5, 20)
    value = sched(count)
    assert value.dtype == torch.float64 and value.shape == () and float(value) == float(sched(3))


def test_schedules_are_frozen_and_readable():
    sched = S.warmup_cosine_decay(0.0, 1e-3, 100, 1000)
    assert sched.peak_value == 1e-3 and sched.decay_steps == 1000
    assert "WarmupCosineDecay(init_value=0.0, peak_value=0.001" in repr(sched)
    with pytest.raises(AttributeError):
        sched.peak_value = 1.0
    assert isinstance(sched, pn.schedules.Schedule)


def test_one_compile_for_every_count():
    compiles = []

    def backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    all_schedules = [
        S.constant(1.0),
        S.linear(0.0, 1.0, 10),
        S.cosine_decay(1.0, 10),
        S.warmup_cosine_decay(0.0, 1.0, 3, 10),
        S.exponential_decay(1.0, 2, 0.5, staircase=True, end_value=0.1),
        S.piecewise_constant(1.0, {4: 0.5}),
        S.join([S.constant(1.0), S.linear(1.0, 0.0, 5)], [5]),
    ]
    evaluate = torch.compile(lambda c: torch.stack([s(c) for s in all_schedules]), backend=backend)
    torch._dynamo.reset()
    for t in range(20):
        count = torch.tensor(t)
        assert torch.equal(evaluate(count), torch.stack([s(count) for s in all_schedules]))
    assert len(compiles) == 1


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: S.constant(float("nan")), ValueError, "constant: value must be a finite number"),
        (
            lambda: S.linear(0.0, 1.0, -1),
            ValueError,
            "linear: transition_steps must be an int >= 0, got -1",
        ),
        (lambda: S.linear(0.0, 1.0, 2.5), ValueError, "transition_steps must be an int"),
        (
            lambda: S.cosine_decay(1.0, 0),
            ValueError,
            "cosine_decay: decay_steps must be an int >= 1, got 0",
        ),
        (
            lambda: S.warmup_cosine_decay(0.0, 1.0, 100, 100),
            ValueError,
            r"decay_steps \(100\) must be greater than warmup_steps \(100\).*counts the warmup",
        ),
        (
            lambda: S.exponential_decay(1.0, 0, 0.5),
            ValueError,
            "transition_steps must be an int >= 1",
        ),
        (lambda: S.exponential_decay(1.0, 1, 0.0), ValueError, "decay_rate must be > 0, got 0.0"),
        (
            lambda: S.piecewise_constant(1.0, {5: -0.1}),
            ValueError,
            "scales must be >= 0, got -0.1 at boundary 5",
        ),
        (
            lambda: S.piecewise_constant(1.0, {-5: 0.1}),
            ValueError,
            "boundaries must be ints >= 0, got -5",
        ),
        (
            lambda: S.join([S.constant(1.0)], [3]),
            ValueError,
            "join: needs one boundary between each pair",
        ),
        (
            lambda: S.join([S.constant(1.0), S.constant(2.0), S.constant(3.0)], [5, 2]),
            ValueError,
            "increasing",
        ),
        (
            lambda: S.join([S.constant(1.0), 2.0], [5]),
            TypeError,
            r"join: schedules\[1\] must be callable",
        ),
        (lambda: S.constant(1.0)("3"), TypeError, "a schedule takes a step count"),
        (
            lambda: S.constant(1.0)(torch.ones(2)),
            ValueError,
            r"a schedule takes a 0-d step count, got shape \(2,\)",
        ),
    ],
)
def test_bad_arguments_are_rejected_naming_them(make, error, message):
    with pytest.raises(error, match=message):
        make()
