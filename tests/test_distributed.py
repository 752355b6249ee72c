"""pn.distributed with a real two-process gloo group on loopback: results, purity, errors.

One spawn runs every scenario in the same process group (starting the processes is
most of the time); each test then checks the values the ranks reported.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import purenn as pn
from purenn.distributed import _collectives


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _values(tree: Any) -> list[tuple[str, str, Any]]:
    """(path, dtype, values as Python numbers) of every leaf: exact, and picklable across processes."""
    return [
        (p, str(t.dtype), t.tolist())
        for p, t in zip(pn.tree.paths(tree), pn.tree.leaves(tree), strict=True)
    ]


def _storages(tree: Any) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in pn.tree.leaves(tree) if t.numel()}


def _error(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


def _params_mean_and_broadcast(rank: int) -> dict[str, Any]:
    grads = pn.Params(
        {
            "w": torch.full((3, 2), float(rank + 1)),
            "b": {"x": torch.tensor([rank * 2.0], dtype=torch.float64)},
        }
    )
    mean = pn.distributed.all_reduce_mean(grads)
    params = pn.distributed.broadcast(pn.Params({"w": torch.full((4,), float(rank))}), src=1)
    return {
        "mean_w": mean["w"].tolist(),
        "mean_b": mean["b.x"].tolist(),
        "mean_dtype": str(mean["b.x"].dtype),
        "grads_untouched": grads["w"].tolist(),
        "broadcast": params["w"].tolist(),
        "broadcast_packed": params._packed is not None,
    }


def _dict_of_trees(rank: int) -> dict[str, Any]:
    tree = {
        "params": pn.Params(
            {"w": torch.full((2, 3), rank + 0.25), "sub": {"b": torch.arange(3.0) * (rank + 1)}}
        ),
        "step": torch.tensor(1000 + rank, dtype=torch.int64),
        "flags": [
            torch.tensor([rank == 1, rank == 0]),
            (torch.tensor([rank, -rank], dtype=torch.int32),),
        ],
        "nothing": None,
        "half": torch.full((2,), 1.5 + rank, dtype=torch.float16),
    }
    before = _values(tree)
    out = pn.distributed.broadcast(tree, src=1)
    pn.check_unmodified(tree["params"], "params")
    return {
        "before": before,
        "after": _values(out),
        "input_after": _values(tree),
        "types": [type(out).__name__, type(out["params"]).__name__, type(out["flags"]).__name__],
        "nothing": out["nothing"],
        "shares_input_storage": bool(_storages(out) & _storages(tree)),
        "params_packed": out["params"]._packed is not None,
    }


def _adam_state(rank: int) -> dict[str, Any]:
    results = {}
    for packed in (False, True):
        params = pn.Params({"w": torch.full((2, 2), float(rank)), "b": torch.zeros(2)})
        if packed:
            params = pn.tree.pack(params)
        opt = pn.optim.adam(lr=0.1, amsgrad=packed)  # unpacked: max_exp_avg_sq is None
        state = opt.init(params)
        for step in range(rank + 2):  # rank r has count r + 2 and moments of its own
            grads = pn.tree.map(
                lambda t, s=step: torch.full_like(t, (rank + 1) * (s + 0.5)), params
            )
            params, state = pn.step(opt, params, grads, state)
        before = _values(state)
        out = pn.distributed.broadcast(state)  # src=0, as after rank 0 loads a checkpoint
        grads = pn.tree.map(torch.ones_like, params)
        _, next_state = pn.step(opt, params, grads, out)  # the broadcast state is usable as is
        results[packed] = {
            "before": before,
            "after": _values(out),
            "input_after": _values(state),
            "type": type(out).__name__,
            "count_dtype": str(out.count.dtype),
            "max_is_none": out.max_exp_avg_sq is None,
            "exp_avg_packed": out.exp_avg._packed is not None,
            "next_count": next_state.count.item(),
            "shares_input_storage": bool(_storages(out) & _storages(state)),
        }
    return results


def _batch_norm_state(rank: int) -> dict[str, Any]:
    model = pn.nn.sequential(pn.nn.linear(3, 3), pn.nn.batch_norm(3))
    params = model.init(pn.random.key(rank))
    state = model.init_state()
    gen = torch.Generator().manual_seed(rank)
    for _ in range(rank + 1):  # num_batches_tracked: rank + 1
        _, state = model.apply(params, torch.randn(4, 3, generator=gen), state=state, train=True)
    before = _values(state)
    out = pn.distributed.broadcast({"params": params, "state": state}, src=1)
    return {
        "before": before,
        "after": _values(out["state"]),
        "params_after": _values(out["params"]),
        "params_before": _values(params),
        "input_after": _values(state),
        "mean_error": _error(lambda: pn.distributed.all_reduce_mean({"model": state})),
    }


def _mean_over_containers(rank: int) -> dict[str, Any]:
    tree = {
        "a": (
            pn.Params(
                {"w": torch.full((2, 2), 2.0 * rank), "s": torch.tensor(rank, dtype=torch.float64)}
            ),
            torch.tensor([1.0 + rank, -3.0 * rank], dtype=torch.bfloat16),
        ),
        "b": [torch.tensor([complex(rank, -rank)], dtype=torch.complex64), None],
    }
    before = _values(tree)
    out = pn.distributed.all_reduce_mean(tree)
    return {
        "after": _values(out),
        "before": before,
        "input_after": _values(tree),
        "types": [type(out).__name__, type(out["a"]).__name__, type(out["b"]).__name__],
        "none_kept": out["b"][1] is None,
        "shares_input_storage": bool(_storages(out) & _storages(tree)),
    }


def _errors(rank: int) -> dict[str, Any]:
    adam_state = pn.optim.adam().init(pn.Params({"w": torch.zeros(2)}))
    return {
        "adam_count": _error(
            lambda: pn.distributed.all_reduce_mean(
                {"grads": pn.Params({"w": torch.ones(2)}), "opt": adam_state}
            )
        ),
        "bool": _error(
            lambda: pn.distributed.all_reduce_mean([torch.ones(1), torch.tensor([True])])
        ),
        "python_number": _error(lambda: pn.distributed.broadcast({"lr": 0.1})),
        "src": _error(lambda: pn.distributed.broadcast(pn.Params({"w": torch.ones(1)}), src=2)),
    }


def _dtensors(rank: int) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard

    mesh = init_device_mesh("cpu", (2, 1), mesh_dim_names=("dp", "tp"))
    # Sharded over "tp" (size 1 here), replicated over "dp": each rank holds the same shard.
    local = torch.full((2, 3), float(rank))
    leaf = DTensor.from_local(local, mesh, [Replicate(), Shard(0)], run_check=False)
    tree = pn.Params({"w": leaf, "b": torch.full((3,), 4.0 * rank)})
    sent = pn.distributed.broadcast(tree, src=1)
    mean = pn.distributed.all_reduce_mean(tree)
    split = DTensor.from_local(local, mesh, [Shard(0), Replicate()], run_check=False)
    return {
        "sent_is_dtensor": isinstance(sent["w"], DTensor),
        "sent_placements": str(sent["w"].placements),
        "sent": sent["w"].to_local().tolist(),
        "sent_b": sent["b"].tolist(),
        "mean": mean["w"].to_local().tolist(),
        "local_untouched": local.tolist(),
        "split_error": _error(lambda: pn.distributed.broadcast({"layer": {"w": split}})),
    }


def _staged(rank: int) -> dict[str, Any]:
    """As under an NCCL-only group (CUDA only), which cannot take the CPU leaves of a rule's state.

    There is no GPU here, so the group is said to serve only "cuda" and buffers are staged
    through a fresh CPU copy: what is checked is that staged values go out and come back.
    """
    saved = _collectives._device_types, _collectives._staging_device
    _collectives._device_types = lambda group: ["cuda"]
    _collectives._staging_device = lambda buffers, served: torch.device("cpu")
    try:
        params = pn.Params({"w": torch.full((2,), float(rank))})
        state = pn.optim.adam().init(params)
        state = pn.tree.set(state, "count", torch.tensor(5 + rank))
        sent = pn.distributed.broadcast(state, src=1)
        mean = pn.distributed.all_reduce_mean({"g": params, "s": torch.tensor(2.0 * rank)})
    finally:
        _collectives._device_types, _collectives._staging_device = saved
    return {"count": sent.count.item(), "mean": _values(mean), "input_count": state.count.item()}


_SCENARIOS: dict[str, Callable[[int], dict[str, Any]]] = {
    "params": _params_mean_and_broadcast,
    "dict_of_trees": _dict_of_trees,
    "adam": _adam_state,
    "batch_norm": _batch_norm_state,
    "mean_containers": _mean_over_containers,
    "errors": _errors,
    "dtensor": _dtensors,
    "staged": _staged,
}


def _worker(rank: int, world: int, port: int, results: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results[rank] = {name: run(rank) for name, run in _SCENARIOS.items()}  # type: ignore[index]
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> dict[int, dict[str, Any]]:
    """What each of two gloo ranks reported for every scenario."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        return dict(results)


def test_all_reduce_mean_and_broadcast_across_two_processes(ranks):
    for rank in (0, 1):
        r = ranks[rank]["params"]
        assert (
            r["mean_w"] == [[1.5, 1.5]] * 3
            and r["mean_b"] == [1.0]
            and r["mean_dtype"] == "torch.float64"
        )
        assert r["grads_untouched"] == [[float(rank + 1)] * 2] * 3  # the input tree is not changed
        assert r["broadcast"] == [1.0] * 4
        assert r["broadcast_packed"]  # Params with non-scalar leaves come back packed, as before


def test_broadcast_of_a_dict_of_trees_gives_every_rank_src_leaves_exactly(ranks):
    src = ranks[1]["dict_of_trees"]["before"]
    assert [p for p, _, _ in src] == [
        "flags.0",
        "flags.1.0",
        "half",
        "params.w",
        "params.sub.b",
        "step",
    ]
    for rank in (0, 1):
        r = ranks[rank]["dict_of_trees"]
        assert r["after"] == src  # paths, dtypes (bool, int32, int64, float16) and values
        assert r["input_after"] == r["before"]
        assert r["types"] == ["dict", "Params", "list"] and r["nothing"] is None
        assert not r["shares_input_storage"] and r["params_packed"]
    assert ranks[0]["dict_of_trees"]["before"] != src  # rank 0 really received something


@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
def test_broadcast_of_an_adam_state_resumes_every_rank_from_src(ranks, packed):
    src = ranks[0]["adam"][packed]["before"]
    assert ("count", "torch.int64", 2) in src
    assert ranks[1]["adam"][packed]["before"] != src
    for rank in (0, 1):
        r = ranks[rank]["adam"][packed]
        assert r["after"] == src  # count, hyperparameters and moments: rank 0's, bit for bit
        assert r["input_after"] == r["before"]
        assert r["type"] == "AdamState" and r["count_dtype"] == "torch.int64"
        assert r["max_is_none"] is (not packed)  # a None field stays None
        assert r["exp_avg_packed"]  # moments (non-scalar Params) come back packed either way
        assert r["next_count"] == 3
        assert not r["shares_input_storage"]


def test_broadcast_of_batch_norm_state_copies_num_batches_tracked(ranks):
    src = ranks[1]["batch_norm"]
    assert ("1.num_batches_tracked", "torch.int64", 2) in src["before"]
    for rank in (0, 1):
        r = ranks[rank]["batch_norm"]
        assert r["after"] == src["before"] and r["params_after"] == src["params_before"]
        assert r["input_after"] == r["before"]


def test_all_reduce_mean_over_dicts_tuples_and_lists(ranks):
    for rank in (0, 1):
        r = ranks[rank]["mean_containers"]
        assert r["after"] == [
            ("a.0.w", "torch.float32", [[1.0, 1.0]] * 2),
            ("a.0.s", "torch.float64", 0.5),
            ("a.1", "torch.bfloat16", [1.5, -1.5]),
            ("b.0", "torch.complex64", [complex(0.5, -0.5)]),
        ]
        assert r["input_after"] == r["before"] and not r["shares_input_storage"]
        assert r["types"] == ["dict", "tuple", "list"] and r["none_kept"]


def test_all_reduce_mean_names_integer_and_bool_leaves_and_other_errors(ranks):
    for rank in (0, 1):
        e = ranks[rank]["errors"]
        assert e["adam_count"].startswith(
            "TypeError: pn.distributed.all_reduce_mean: leaf 'opt.count' is torch.int64"
        )
        assert "use pn.distributed.broadcast for integer state" in e["adam_count"]
        assert "leaf '1' is torch.bool" in e["bool"]
        bn_error = ranks[rank]["batch_norm"]["mean_error"]
        assert "leaf 'model.1.num_batches_tracked' is torch.int64" in bn_error
        assert e["python_number"].startswith(
            "TypeError: pn.distributed.broadcast: leaf 'lr' is a float, not a tensor"
        )
        assert e["src"].startswith("ValueError: pn.distributed.broadcast: src=2 is not a rank")


def test_dtensor_leaves_are_sent_shard_by_shard_and_stay_dtensors(ranks):
    for rank in (0, 1):
        r = ranks[rank]["dtensor"]
        assert r["sent_is_dtensor"] and r["sent_placements"] == "(Replicate(), Shard(dim=0))"
        assert r["sent"] == [[1.0] * 3] * 2 and r["sent_b"] == [4.0] * 3
        assert r["mean"] == [[0.5] * 3] * 2
        assert r["local_untouched"] == [[float(rank)] * 3] * 2
        assert r["split_error"].startswith(
            "ValueError: pn.distributed.broadcast: leaf 'layer.w' is a DTensor placed (Shard(dim=0), "
        )
        assert "Pass group= the data-parallel group" in r["split_error"]


def test_buffers_a_group_cannot_reach_are_staged_and_copied_back(ranks):
    for rank in (0, 1):
        r = ranks[rank]["staged"]
        assert r["count"] == 6 and r["input_count"] == 5 + rank
        assert r["mean"] == [("g.w", "torch.float32", [0.5, 0.5]), ("s", "torch.float32", 1.0)]


def test_staging_uses_a_device_the_tree_already_has_on_the_served_kind():
    on_meta = torch.empty(2, device="meta")
    buffers = [torch.zeros(1), on_meta]
    assert _collectives._staging_device(buffers, ["meta"]) == on_meta.device


def test_collectives_without_a_process_group_say_how_to_start_one():
    assert not dist.is_initialized()
    with pytest.raises(
        pn.PurennError,
        match=r"all_reduce_mean: torch\.distributed is not initialized; call torch\.distributed\.init_process_group",
    ):
        pn.distributed.all_reduce_mean(pn.Params({"w": torch.ones(2)}))
    with pytest.raises(pn.PurennError, match=r"broadcast: torch\.distributed is not initialized"):
        pn.distributed.broadcast(pn.Params({"w": torch.ones(2)}))
    with pytest.raises(pn.PurennError, match=r"broadcast: torch\.distributed is not initialized"):
        pn.distributed.broadcast({"count": torch.tensor(0)})
