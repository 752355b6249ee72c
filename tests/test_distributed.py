"""pn.distributed with a real two-process gloo group on loopback: results, purity, errors."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import purenn as pn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, results: object) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        grads = pn.Params(
            {
                "w": torch.full((3, 2), float(rank + 1)),
                "b": {"x": torch.tensor([rank * 2.0], dtype=torch.float64)},
            }
        )
        mean = pn.distributed.all_reduce_mean(grads)
        params = pn.distributed.broadcast(pn.Params({"w": torch.full((4,), float(rank))}), src=1)
        results[rank] = {  # type: ignore[index]
            "mean_w": mean["w"].tolist(),
            "mean_b": mean["b.x"].tolist(),
            "mean_dtype": str(mean["b.x"].dtype),
            "grads_untouched": grads["w"].tolist(),
            "broadcast": params["w"].tolist(),
        }
    finally:
        dist.destroy_process_group()


def test_all_reduce_mean_and_broadcast_across_two_processes():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        results = dict(results)
    for rank in (0, 1):
        r = results[rank]
        assert (
            r["mean_w"] == [[1.5, 1.5]] * 3
            and r["mean_b"] == [1.0]
            and r["mean_dtype"] == "torch.float64"
        )
        assert r["grads_untouched"] == [[float(rank + 1)] * 2] * 3  # the input tree is not changed
        assert r["broadcast"] == [1.0] * 4


def test_collectives_without_a_process_group_say_how_to_start_one():
    assert not dist.is_initialized()
    with pytest.raises(
        pn.PurennError,
        match=r"all_reduce_mean: torch\.distributed is not initialized; call torch\.distributed\.init_process_group",
    ):
        pn.distributed.all_reduce_mean(pn.Params({"w": torch.ones(2)}))
    with pytest.raises(pn.PurennError, match=r"broadcast: torch\.distributed is not initialized"):
        pn.distributed.broadcast(pn.Params({"w": torch.ones(2)}))
