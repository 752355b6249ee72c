"""Tests for purenn.random: Threefry known answers, key handling, samplers, vmap and global-RNG isolation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import vmap

from purenn import random as pnr
from purenn._errors import ShapeError
from purenn.random._keys import _check_key
from purenn.random._threefry import threefry2x32

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
PRECISION = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}
SHAPES = st.lists(st.integers(0, 5), max_size=3).map(tuple)
FAST = settings(max_examples=30, deadline=None)


def words(*values: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(v, dtype=torch.int64) for v in values)


@pytest.mark.parametrize(
    ("key", "counter", "expected"),
    [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_threefry_known_answers(key, counter, expected):
    y0, y1 = threefry2x32(words(*key), words(*counter))
    assert (y0.item(), y1.item()) == expected


def test_threefry_broadcasts_counters():
    counter = torch.arange(5)
    y0, y1 = threefry2x32(words(7, 9), (torch.zeros_like(counter), counter))
    for i in range(5):
        one = threefry2x32(words(7, 9), words(0, i))
        assert (y0[i], y1[i]) == one


@given(st.integers(0, 2**64 - 1))
def test_key_holds_seed_words(seed):
    k = pnr.key(seed)
    assert k.dtype == torch.int64 and k.shape == (2,)
    assert all(0 <= w < 2**32 for w in k.tolist())
    assert (k[0].item() << 32) | k[1].item() == seed


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (-1, ValueError, r"seed must be an int >= 0 and < 2\*\*64, got -1"),
        (2**64, ValueError, r"seed .* got 18446744073709551616"),
        (True, TypeError, r"seed must be an int, got bool True"),
        (1.0, TypeError, r"seed must be an int, got float 1.0"),
        (torch.tensor(3), TypeError, r"seed must be an int, got Tensor"),
    ],
)
def test_key_rejects_bad_seed(seed, error, match):
    with pytest.raises(error, match=match):
        pnr.key(seed)


KEYED = {
    "split": lambda k: pnr.split(k),
    "fold_in": lambda k: pnr.fold_in(k, 1),
    "bits": lambda k: pnr.bits(k, (16,)),
    "uniform": lambda k: pnr.uniform(k, (16,)),
    "normal": lambda k: pnr.normal(k, (16,)),
    "bernoulli": lambda k: pnr.bernoulli(k, 0.5, (16,)),
    "permutation": lambda k: pnr.permutation(k, 16),
    "randint": lambda k: pnr.randint(k, (16,), 0, 5),
}


@pytest.mark.parametrize("fn", KEYED.values(), ids=KEYED.keys())
def test_every_function_checks_its_key(fn):
    with pytest.raises(
        TypeError, match=r"key must be a PRNG key from pn\.random\.key\(seed\).*got int"
    ):
        fn(0)
    with pytest.raises(ShapeError, match=r"got a torch\.float32 tensor of shape \(2,\)"):
        fn(torch.zeros(2))
    with pytest.raises(ShapeError, match=r"got a torch\.int64 tensor of shape \(3,\)"):
        fn(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ShapeError, match=r"shape \(4, 2\); index a stack of keys"):
        fn(pnr.split(pnr.key(0), 4))


def test_check_key_names_the_argument():
    with pytest.raises(TypeError, match=r"^rng must be a PRNG key .*, got list$"):
        _check_key([0, 0], "rng")
    _check_key(pnr.key(0))


@pytest.mark.parametrize("fn", KEYED.values(), ids=KEYED.keys())
def test_same_key_same_output_different_key_different_output(fn):
    assert torch.equal(fn(pnr.key(11)), fn(pnr.key(11)))
    assert not torch.equal(fn(pnr.key(11)), fn(pnr.key(12)))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_float_samplers_are_deterministic_per_dtype(dtype):
    for sampler in (pnr.uniform, pnr.normal):
        a = sampler(pnr.key(3), (64,), dtype=dtype)
        b = sampler(pnr.key(3), (64,), dtype=dtype)
        assert a.dtype == dtype
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_global_rng_is_never_touched():
    before = torch.random.get_rng_state()
    torch.manual_seed(0)
    first = [fn(pnr.key(1)) for fn in KEYED.values()]
    torch.manual_seed(1)
    second = [fn(pnr.key(1)) for fn in KEYED.values()]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    state = torch.random.get_rng_state()
    for fn in KEYED.values():
        fn(pnr.key(2))
        assert torch.equal(torch.random.get_rng_state(), state)
    torch.random.set_rng_state(before)


def test_split_shape_unpacking_and_distinct_children():
    k = pnr.key(0)
    k1, k2 = pnr.split(k)
    assert k1.shape == k2.shape == (2,)
    children = pnr.split(k, 100)
    assert children.shape == (100, 2) and children.dtype == torch.int64
    assert torch.equal(children[:2], torch.stack([k1, k2]))
    distinct = {tuple(c) for c in children.tolist()} | {tuple(k.tolist())}
    assert len(distinct) == 101


@pytest.mark.parametrize(
    ("n", "error", "match"),
    [
        (0, ValueError, r"n must be an int >= 1 and < 2\*\*32, got 0"),
        (2.0, TypeError, r"n must be an int, got float 2\.0"),
        (True, TypeError, r"n must be an int, got bool"),
    ],
)
def test_split_rejects_bad_n(n, error, match):
    with pytest.raises(error, match=match):
        pnr.split(pnr.key(0), n)


def test_fold_in_is_separated_from_split_and_bits():
    k = pnr.key(0)
    folded = torch.stack([pnr.fold_in(k, i) for i in range(8)])
    assert folded.shape == (8, 2)
    seen = {tuple(f) for f in folded.tolist()}
    assert len(seen) == 8
    assert seen.isdisjoint(tuple(c) for c in pnr.split(k, 8).tolist())
    assert seen.isdisjoint(tuple(b) for b in pnr.bits(k, (8, 2)).tolist())
    assert torch.equal(pnr.fold_in(k, 2**32 - 1), pnr.fold_in(k, 2**32 - 1))


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (-1, ValueError, r"data must be an int >= 0 and < 2\*\*32, got -1"),
        (2**32, ValueError, r"data .* got 4294967296"),
        ("1", TypeError, r"data must be an int, got str '1'"),
    ],
)
def test_fold_in_rejects_bad_data(data, error, match):
    with pytest.raises(error, match=match):
        pnr.fold_in(pnr.key(0), data)


@FAST
@given(SHAPES)
def test_bits_shape_dtype_range(shape):
    out = pnr.bits(pnr.key(4), shape)
    assert out.shape == shape and out.dtype == torch.int64
    assert ((out >= 0) & (out < 2**32)).all()


def test_bits_layout_follows_counters():
    k = pnr.key(0x13198A2E03707344)
    first = pnr.bits(k, 5)
    y0, y1 = threefry2x32((k[0], k[1]), words(0, 1))
    assert first[2:4].tolist() == [y0.item(), y1.item()]
    assert torch.equal(first, pnr.bits(k, (6,))[:5])
    assert torch.equal(pnr.bits(k, (2, 3)).reshape(-1), pnr.bits(k, 6))


@pytest.mark.parametrize(
    ("shape", "error", "match"),
    [
        ((2, -1), ValueError, r"shape must be an int >= 0, got -1"),
        ((2.0,), TypeError, r"shape must be an int, got float"),
        ("ab", TypeError, r"shape must be an int or a sequence of ints, got str"),
        ((2**20, 2**14), ValueError, r"shape asks for 17179869184 random words"),
    ],
)
def test_bits_rejects_bad_shape(shape, error, match):
    with pytest.raises(error, match=match):
        pnr.bits(pnr.key(0), shape)


@FAST
@given(SHAPES, st.sampled_from(FLOAT_DTYPES))
def test_samplers_shape_in_shape_out(shape, dtype):
    k = pnr.key(8)
    assert pnr.uniform(k, shape, dtype=dtype).shape == shape
    assert pnr.normal(k, shape, dtype=dtype).shape == shape
    assert pnr.bernoulli(k, 0.5, shape).shape == shape
    assert pnr.randint(k, shape, 0, 3).shape == shape


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_uniform_range_grid_and_dtype(dtype):
    u = pnr.uniform(pnr.key(1), (20_000,), dtype=dtype)
    assert u.dtype == dtype
    assert u.min() >= 0 and u.max() < 1
    scaled = u.double() * 2 ** PRECISION[dtype]
    assert torch.equal(scaled, scaled.round())
    shifted = pnr.uniform(pnr.key(1), (20_000,), dtype=dtype, low=1.0, high=2.0)
    assert shifted.min() >= 1 and shifted.max() < 2
    negative = pnr.uniform(pnr.key(1), (20_000,), dtype=dtype, low=-3.0, high=-2.5)
    assert negative.min() >= -3 and negative.max() < -2.5


def test_uniform_never_reaches_high_after_rounding():
    u = pnr.uniform(pnr.key(0), (50_000,), dtype=torch.float16, low=1.0, high=2.0)
    assert u.max() == 2 - 2**-10


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": torch.int32}, TypeError, r"dtype must be a floating dtype, .*got torch\.int32"),
        ({"dtype": float}, TypeError, r"dtype must be a floating dtype, .*got <class 'float'>"),
        ({"low": 1.0, "high": 1.0}, ValueError, r"low must be < high, got low=1\.0 and high=1\.0"),
        ({"high": math.inf}, ValueError, r"high must be finite, got inf"),
        ({"low": "0"}, TypeError, r"low must be a float, got str"),
    ],
)
def test_uniform_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        pnr.uniform(pnr.key(0), (2,), **kwargs)


def test_normal_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"dtype must be a floating dtype, .*got torch\.int64"):
        pnr.normal(pnr.key(0), (2,), dtype=torch.int64)
    with pytest.raises(ValueError, match=r"std must be finite, got nan"):
        pnr.normal(pnr.key(0), (2,), std=math.nan)


def test_uniform_buckets_are_even():
    n, buckets = 100_000, 20
    u = pnr.uniform(pnr.key(2024), (n,))
    counts = torch.bincount((u * buckets).long(), minlength=buckets).double()
    chi2 = ((counts - n / buckets) ** 2 / (n / buckets)).sum().item()
    assert chi2 < (buckets - 1) + 10 * math.sqrt(2 * (buckets - 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_moments_and_cdf(dtype):
    n = 100_000
    z = pnr.normal(pnr.key(7), (n,), dtype=dtype).double()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.std().item() - 1) < 5 / math.sqrt(2 * n)
    empirical = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = (empirical - torch.special.ndtr(z.sort().values)).abs().max().item()
    assert ks < 2 / math.sqrt(n)
    assert z.isfinite().all()


def test_normal_mean_and_std_apply():
    z = pnr.normal(pnr.key(7), (100_000,), mean=3.0, std=0.5)
    assert abs(z.mean().item() - 3) < 5 * 0.5 / math.sqrt(1e5)
    assert abs(z.std().item() - 0.5) < 5 * 0.5 / math.sqrt(2e5)


def test_bernoulli_frequency_and_extremes():
    n, p = 100_000, 0.3
    draws = pnr.bernoulli(pnr.key(5), p, (n,))
    assert draws.dtype == torch.bool
    assert abs(draws.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert not pnr.bernoulli(pnr.key(5), 0.0, (n,)).any()
    assert pnr.bernoulli(pnr.key(5), 1, (n,)).all()


def test_bernoulli_tensor_p_broadcasts():
    p = torch.tensor([0.0, 1.0, 0.5])
    draws = pnr.bernoulli(pnr.key(5), p, (1000, 3))
    assert draws.shape == (1000, 3)
    assert not draws[:, 0].any() and draws[:, 1].all()
    assert 0.4 < draws[:, 2].double().mean().item() < 0.6
    assert pnr.bernoulli(pnr.key(5), p).shape == (3,)


@pytest.mark.parametrize(
    ("p", "shape", "error", "match"),
    [
        (1.5, (), ValueError, r"p must be in \[0, 1\], got 1\.5"),
        (-0.1, (), ValueError, r"p must be in \[0, 1\], got -0\.1"),
        (math.nan, (), ValueError, r"p must be finite, got nan"),
        (True, (), TypeError, r"p must be a float, got bool"),
        (
            torch.tensor([1, 0]),
            (2,),
            TypeError,
            r"p must be a float or a floating tensor, got a torch\.int64",
        ),
        (
            torch.full((3,), 0.5),
            (2,),
            ShapeError,
            r"p of shape \(3,\) does not broadcast to shape \(2,\)",
        ),
        (
            torch.full((3,), 0.5),
            (),
            ShapeError,
            r"p of shape \(3,\) does not broadcast to shape \(\)",
        ),
    ],
)
def test_bernoulli_rejects_bad_p(p, shape, error, match):
    with pytest.raises(error, match=match):
        pnr.bernoulli(pnr.key(0), p, shape)


def test_permutation_is_a_permutation():
    perm = pnr.permutation(pnr.key(9), 1000)
    assert perm.dtype == torch.int64
    assert torch.equal(perm.sort().values, torch.arange(1000))
    assert not torch.equal(perm, torch.arange(1000))
    assert pnr.permutation(pnr.key(9), 0).shape == (0,)
    firsts = vmap(lambda k: pnr.permutation(k, 4)[0])(pnr.split(pnr.key(0), 4000))
    assert torch.bincount(firsts, minlength=4).min() > 900
    with pytest.raises(ValueError, match=r"n must be an int >= 0 and < 2\*\*32, got -2"):
        pnr.permutation(pnr.key(0), -2)


def test_randint_range_and_errors():
    values = pnr.randint(pnr.key(1), (10_000,), -3, 4)
    assert values.dtype == torch.int64
    assert torch.equal(values.unique(), torch.arange(-3, 4))
    wide = pnr.randint(pnr.key(1), (1000,), -(2**63), -(2**63) + 2**32)
    assert (wide >= -(2**63)).all() and (wide < -(2**63) + 2**32).all()
    with pytest.raises(
        ValueError, match=r"need low < high <= low \+ 2\*\*32, got low=2 and high=2"
    ):
        pnr.randint(pnr.key(0), (2,), 2, 2)
    with pytest.raises(ValueError, match=r"need low < high .* got low=0 and high=4294967297"):
        pnr.randint(pnr.key(0), (2,), 0, 2**32 + 1)
    with pytest.raises(TypeError, match=r"high must be an int, got float"):
        pnr.randint(pnr.key(0), (2,), 0, 2.0)


VMAPPED = {
    "uniform": lambda k: pnr.uniform(k, (3, 4)),
    "uniform64": lambda k: pnr.uniform(k, (5,), dtype=torch.float64, low=-2.0, high=3.0),
    "normal": lambda k: pnr.normal(k, (3, 4), dtype=torch.bfloat16),
    "normal64": lambda k: pnr.normal(k, (5,), dtype=torch.float64),
    "bernoulli": lambda k: pnr.bernoulli(k, 0.3, (7,)),
    "bernoulli_tensor_p": lambda k: pnr.bernoulli(k, torch.tensor([0.2, 0.8]), (4, 2)),
    "split": lambda k: pnr.split(k, 3),
    "fold_in": lambda k: pnr.fold_in(k, 17),
    "bits": lambda k: pnr.bits(k, (5,)),
    "permutation": lambda k: pnr.permutation(k, 6),
    "randint": lambda k: pnr.randint(k, (5,), -2, 9),
}


@pytest.mark.parametrize("fn", VMAPPED.values(), ids=VMAPPED.keys())
def test_vmap_over_keys_matches_loop(fn):
    keys = pnr.split(pnr.key(123), 6)
    batched = vmap(fn)(keys)
    looped = torch.stack([fn(k) for k in keys])
    assert batched.dtype == looped.dtype
    assert torch.equal(batched, looped)


def test_nested_vmap_and_vmapped_p():
    keys = pnr.split(pnr.key(1), 6).reshape(2, 3, 2)
    nested = vmap(vmap(lambda k: pnr.normal(k, (4,))))(keys)
    assert torch.equal(
        nested, torch.stack([torch.stack([pnr.normal(k, (4,)) for k in row]) for row in keys])
    )
    ps = torch.tensor([0.1, 0.5, 0.9])
    draws = vmap(lambda k, p: pnr.bernoulli(k, p, (8,)))(keys[0], ps)
    assert torch.equal(
        draws, torch.stack([pnr.bernoulli(k, p, (8,)) for k, p in zip(keys[0], ps, strict=True)])
    )


def test_vmapped_key_check_sees_member_shape():
    with pytest.raises(ShapeError, match=r"got a torch\.int64 tensor of shape \(3,\)"):
        vmap(pnr.split)(torch.zeros(4, 3, dtype=torch.int64))


@pytest.mark.slow
def test_compiles_without_graph_breaks():
    def draw(k: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k1, k2, k3 = pnr.split(k, 3)
        return (
            pnr.uniform(k1, (4,)),
            pnr.normal(k2, (4,)),
            pnr.bernoulli(pnr.fold_in(k3, 2), 0.5, (4,)),
        )

    torch._dynamo.reset()
    compiled = torch.compile(draw, backend="eager", fullgraph=True)
    for seed in (0, 1):
        for got, want in zip(compiled(pnr.key(seed)), draw(pnr.key(seed)), strict=True):
            assert torch.equal(got, want)


@pytest.mark.slow
def test_key_device_decides_where_bits_are_made():
    k = pnr.key(5, device="meta")
    assert k.device.type == "meta"
    assert pnr.bits(k, (3,)).device.type == "meta"
    assert pnr.uniform(k, (3,)).device.type == "meta"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_match_cpu():
    exact = {
        "split": lambda k: pnr.split(k, 5),
        "bits": lambda k: pnr.bits(k, (1001,)),
        "uniform": lambda k: pnr.uniform(k, (1000,), dtype=torch.float16, low=1.0, high=2.0),
        "bernoulli": lambda k: pnr.bernoulli(k, 0.3, (1000,)),
        "permutation": lambda k: pnr.permutation(k, 100),
    }
    for seed in (0, 2**64 - 1):
        cpu, gpu = pnr.key(seed), pnr.key(seed, device="cuda")
        for fn in exact.values():
            out = fn(gpu)
            assert out.device.type == "cuda"
            assert torch.equal(out.cpu(), fn(cpu))
        torch.testing.assert_close(pnr.normal(gpu, (1000,)).cpu(), pnr.normal(cpu, (1000,)))
