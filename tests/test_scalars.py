"""What the compiled element loops compute: step scalars once per step, not per element, and no lerp blend."""

from __future__ import annotations

import re

import pytest
import torch
from torch._inductor.utils import run_and_get_code

import purenn as pn
from purenn._scalars import materialize


def _vector_loops(code: str) -> list[str]:
    """The bodies of the generated C++ kernels' vectorized element loops (from each `for(` over x0 on)."""
    bodies = (loop.split("def call")[0] for loop in re.split(r"for\s*\(\s*int64_t x0", code)[1:])
    return [body for body in bodies if "Vectorized" in body]


@pytest.mark.slow
def test_compiled_adam_element_loop_reads_step_scalars_and_divides_once():
    opt = pn.optim.adam(pn.schedules.cosine_decay(1e-3, 100), weight_decay=0.1)
    params = pn.tree.pack(pn.Params({"w": torch.randn(4096), "b": torch.randn(64)}))
    grads = pn.tree.map(torch.ones_like, params)
    step = torch.compile(lambda p, s, g: pn.step(opt, p, g, s), dynamic=False)
    (new_params, _), codes = run_and_get_code(step, params, opt.init(params), grads)
    code = "\n".join(codes)
    vector_bodies = _vector_loops(code)
    assert vector_bodies, "no vectorized element loop found in the generated code"
    # pow (bias corrections) and cos (the schedule) live outside the per-element loop.
    for body in vector_bodies:
        assert not re.search(r"\b(std::)?(pow|cos)\(", body), body[:2000]
    # The lean update loop (docs/performance.md): no lerp blend, and the bias correction is a
    # multiplication, so m / denom is the only division per element.
    update_bodies = [body for body in vector_bodies if ".sqrt()" in body]
    assert update_bodies, "no vectorized Adam update loop found in the generated code"
    for body in update_bodies:
        assert "blendv" not in body, body[:2000]
        assert len(re.findall(r"= tmp\d+ / tmp\d+;", body)) == 1, body[:2000]
    assert "purenn.materialize" not in code  # on the CPU the stacked buffer alone is realized
    expected, _ = pn.step(opt, params, grads, opt.init(params))
    torch.testing.assert_close(new_params, expected)


@pytest.mark.slow
def test_compiled_moving_averages_have_no_lerp_blend_in_their_element_loops():
    # One compile for three rules, whose updates inductor fuses into one loop. RAdam, which
    # shares `moving_average`, is left out: its rectification is a torch.where, a blend by design.
    rules = [pn.optim.nadam(1e-3), pn.optim.adamax(1e-3), pn.optim.rmsprop(1e-3, centered=True)]
    params = pn.tree.pack(pn.Params({"w": torch.randn(4096)}))
    grads = pn.tree.map(torch.ones_like, params)
    states = [rule.init(params) for rule in rules]

    def updates(g: pn.Params, states: list) -> list:
        return [rule.update(g, s, params)[0] for rule, s in zip(rules, states, strict=True)]

    compiled, codes = run_and_get_code(torch.compile(updates, dynamic=False), grads, states)
    update_bodies = [b for b in _vector_loops("\n".join(codes)) if ".sqrt()" in b]
    assert update_bodies, "no vectorized update loop found in the generated code"
    for body in update_bodies:
        assert "blendv" not in body, body[:2000]
    for ours, expected in zip(compiled, updates(grads, states), strict=True):
        torch.testing.assert_close(ours, expected)


def test_materialize_is_the_identity_eagerly_and_a_well_formed_op():
    scalars = [torch.tensor(2.0), torch.tensor(3.0, dtype=torch.float64), torch.tensor(4.0)]
    assert all(a is b for a, b in zip(materialize(scalars), scalars, strict=True))
    # The opaque op that keeps the stacked scalars out of GPU loops: schemas, fake kernel, autograd.
    torch.library.opcheck(torch.ops.purenn.materialize.default, (torch.randn(3),))
    torch.library.opcheck(
        torch.ops.purenn.materialize.default, (torch.randn(3, requires_grad=True),)
    )
