"""Full training step of an MLP (784-1024-1024-10, batch 128, AdamW): purenn against nn.Module + torch.optim and JAX.

python benchmarks/bench_mlp.py
python benchmarks/bench_mlp.py --device cuda --batch 512
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env

_env.configure(sys.argv)  # thread counts and the inductor cache are read when torch is imported

import _harness as h  # noqa: E402
import torch  # noqa: E402

import purenn as pn  # noqa: E402

WIDTHS = (784, 1024, 1024, 10)
LR, WD = 1e-3, 1e-2


def data(batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    return torch.randn(batch, WIDTHS[0], generator=g, device=device), torch.randint(
        0, 10, (batch,), generator=g, device=device
    )


def module_variant(kind: str, batch: int, device: str) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(WIDTHS[0], WIDTHS[1]),
            torch.nn.ReLU(),
            torch.nn.Linear(WIDTHS[1], WIDTHS[2]),
            torch.nn.ReLU(),
            torch.nn.Linear(WIDTHS[2], WIDTHS[3]),
        ).to(device)
        opt = torch.optim.AdamW(
            net.parameters(),
            lr=LR,
            weight_decay=WD,
            foreach=kind == "foreach",
            fused=kind == "fused",
        )
        x, y = data(batch, device)

        def step() -> object:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss

        return step

    return setup


def purenn_variant(compiled: bool, batch: int, device: str) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        model = pn.nn.mlp(WIDTHS[0], list(WIDTHS[1:-1]), WIDTHS[-1])
        opt = pn.optim.adamw(LR, weight_decay=WD)
        loss_fn = pn.loss(model.apply, pn.losses.cross_entropy)

        def train_step(
            params: pn.Params, opt_state: object, x: torch.Tensor, y: torch.Tensor
        ) -> tuple:
            loss, grads = pn.value_and_grad(loss_fn)(params, x, y)
            params, opt_state = pn.step(opt, params, grads, opt_state)
            return params, opt_state, loss

        params = pn.tree.map(lambda t: t.to(device), model.init(pn.random.key(0)))
        if compiled:
            params = pn.tree.pack(params)
        fn = pn.jit(train_step, donate_argnums=(0, 1)) if compiled else train_step
        holder = {"params": params, "state": opt.init(params)}
        x, y = data(batch, device)

        def step() -> object:
            holder["params"], holder["state"], loss = fn(holder["params"], holder["state"], x, y)
            return loss

        return step

    return setup


def jax_variant(batch: int, device: str) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        import jax
        import jax.numpy as jnp
        import optax

        keys = jax.random.split(jax.random.PRNGKey(0), len(WIDTHS) - 1)
        params = []
        for key, (fan_in, fan_out) in zip(keys, itertools.pairwise(WIDTHS), strict=True):
            bound = 1 / fan_in**0.5
            k1, k2 = jax.random.split(key)
            params.append(
                (
                    jax.random.uniform(k1, (fan_in, fan_out), minval=-bound, maxval=bound),
                    jax.random.uniform(k2, (fan_out,), minval=-bound, maxval=bound),
                )
            )
        opt = optax.adamw(LR, weight_decay=WD)
        x, y = (jnp.asarray(t.cpu().numpy()) for t in data(batch, "cpu"))

        def loss_fn(params: list, x: object, y: object) -> object:
            for i, (w, b) in enumerate(params):
                x = x @ w + b
                if i < len(params) - 1:
                    x = jax.nn.relu(x)
            return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()

        def train_step(params: list, state: object, x: object, y: object) -> tuple:
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        fn = jax.jit(train_step, donate_argnums=(0, 1))
        holder = {"params": params, "state": opt.init(params)}

        def step() -> object:
            holder["params"], holder["state"], loss = fn(holder["params"], holder["state"], x, y)
            return loss

        return step

    return setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="threads per contender (torch and XLA)"
    )
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="reuse inductor's on-disk cache (default: a fresh one)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [
        h.Variant("nn.Module + AdamW fused", module_variant("fused", args.batch, args.device)),
        h.Variant("nn.Module + AdamW foreach", module_variant("foreach", args.batch, args.device)),
        h.Variant("JAX jit+donate (optax.adamw)", jax_variant(args.batch, args.device)),
        h.Variant("purenn eager", purenn_variant(False, args.batch, args.device)),
        h.Variant("purenn pn.jit donated", purenn_variant(True, args.batch, args.device)),
    ]
    if args.device != "cpu":
        variants[2].skipped = "JAX runs on the CPU here"
    print(
        f"MLP {'-'.join(map(str, WIDTHS))} training step, batch {args.batch}, device {args.device}: {h.environment(args.device)}\n"
    )
    h.run_interleaved(variants, args.device, args.rounds, args.warmup, steps_per_round=5)
    print(
        h.table(
            variants,
            "nn.Module + AdamW fused",
            f"full step, median of {args.rounds} interleaved rounds of 5 steps, order shuffled per round",
        )
    )


if __name__ == "__main__":
    main()
