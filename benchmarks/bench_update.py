"""AdamW update step: purenn against torch.optim (for-loop, foreach, fused, compiled), TorchOpt and Optax.

Prints, per parameter set, a Markdown table of median step times (interleaved
rounds), ratios to torch.optim's fused AdamW, first-call (compile) times and the
transient memory of one update; paste it into docs/performance.md.

    python benchmarks/bench_update.py                     # CPU, all three sets
    python benchmarks/bench_update.py --device cuda --sets 16M 1B
    python benchmarks/bench_update.py --sets 2000x64 --rounds 30

Memory: each variant runs again alone in a fresh process. On CPU it reports the
peak RSS growth during 5 steps beyond the RSS after setup (bytes per parameter)
and whether the outputs reuse the input buffers (data_ptr); on CUDA, the growth
of torch.cuda.max_memory_allocated over the memory held after setup.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env

_env.configure(sys.argv)  # thread counts and the inductor cache are read when torch is imported

import _harness as h  # noqa: E402
import torch  # noqa: E402

import purenn as pn  # noqa: E402

SETS = {
    "16M": (1, 16_000_000),
    "200x79k": (200, 79_000),
    "2000x64": (2000, 64),
    "1B": (1, 1_000_000_000),
}
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 1e-2


def make_data(name: str, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    count, size = SETS[name]
    g = torch.Generator(device=device).manual_seed(0)
    params = [torch.randn(size, generator=g, device=device) for _ in range(count)]
    grads = [torch.randn(size, generator=g, device=device) * 1e-2 for _ in range(count)]
    return params, grads


def torch_optim(kind: str, set_name: str, device: str) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        params, grads = make_data(set_name, device)
        tensors = [torch.nn.Parameter(p) for p in params]
        for t, g in zip(tensors, grads, strict=True):
            t.grad = g
        options = (
            {"foreach": kind == "foreach", "fused": kind == "fused"}
            if kind != "compiled"
            else {"foreach": False}
        )
        opt = torch.optim.AdamW(tensors, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, **options)
        step = torch.compile(opt.step) if kind == "compiled" else opt.step
        return lambda: step()

    return setup


def torchopt_variant(
    inplace: bool, set_name: str, device: str
) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        import torchopt

        params, grads = make_data(set_name, device)
        params = tuple(params)
        grads = tuple(grads)
        opt = torchopt.adamw(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
        holder = {"params": params, "state": opt.init(params)}

        def step() -> object:
            updates, holder["state"] = opt.update(
                grads, holder["state"], params=holder["params"], inplace=inplace
            )
            holder["params"] = torchopt.apply_updates(holder["params"], updates, inplace=inplace)
            return holder["params"][0]

        return step

    return setup


def optax_variant(set_name: str, device: str) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        import jax
        import jax.numpy as jnp
        import optax

        if device != "cpu" and not any(d.platform == "gpu" for d in jax.devices()):
            raise RuntimeError("JAX has no GPU here")
        params, grads = make_data(set_name, "cpu")
        jparams = [jnp.asarray(p.numpy()) for p in params]
        jgrads = [jnp.asarray(g.numpy()) for g in grads]
        opt = optax.adamw(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS, weight_decay=WD)

        def _update(p: object, s: object, g: object) -> tuple[object, object]:
            updates, s = opt.update(g, s, p)
            return optax.apply_updates(p, updates), s

        update = jax.jit(_update, donate_argnums=(0, 1))
        holder = {"params": jparams, "state": opt.init(jparams)}

        def step() -> object:
            holder["params"], holder["state"] = update(holder["params"], holder["state"], jgrads)
            return holder["params"][0]

        return step

    return setup


def purenn_variant(kind: str, set_name: str, device: str) -> Callable[[], Callable[[], object]]:
    """kind: 'eager' (pure, per leaf), 'eager-packed', 'jit' (no donation), 'jit-donate'."""

    def setup() -> Callable[[], object]:
        params, grads = make_data(set_name, device)
        opt = pn.optim.adamw(LR, betas=BETAS, eps=EPS, weight_decay=WD)
        tree = pn.Params({f"p{i}": p for i, p in enumerate(params)})
        g = pn.Params({f"p{i}": x for i, x in enumerate(grads)})
        if kind != "eager":
            tree, g = pn.tree.pack(tree), pn.tree.pack(g)

        def update(p: pn.Params, s: object, grads: pn.Params) -> tuple[pn.Params, object]:
            return pn.step(opt, p, grads, s)

        fn = {
            "eager": update,
            "eager-packed": update,
            "jit": pn.jit(update),
            "jit-donate": pn.jit(update, donate_argnums=(0, 1)),
        }[kind]
        holder = {"params": tree, "state": opt.init(tree)}

        def step() -> object:
            holder["params"], holder["state"] = fn(holder["params"], holder["state"], g)
            return None

        step.holder = holder  # type: ignore[attr-defined]
        return step

    return setup


VARIANTS: dict[str, Callable[[str, str], Callable[[], Callable[[], object]]]] = {
    "torch.optim for-loop": lambda s, d: torch_optim("forloop", s, d),
    "torch.optim foreach": lambda s, d: torch_optim("foreach", s, d),
    "torch.optim fused": lambda s, d: torch_optim("fused", s, d),
    "torch.compile(opt.step)": lambda s, d: torch_optim("compiled", s, d),
    "TorchOpt functional": lambda s, d: torchopt_variant(False, s, d),
    "TorchOpt in-place": lambda s, d: torchopt_variant(True, s, d),
    "Optax jit+donate (JAX)": optax_variant,
    "purenn eager (per leaf)": lambda s, d: purenn_variant("eager", s, d),
    "purenn eager (packed)": lambda s, d: purenn_variant("eager-packed", s, d),
    "purenn pn.jit": lambda s, d: purenn_variant("jit", s, d),
    "purenn pn.jit donated": lambda s, d: purenn_variant("jit-donate", s, d),
}


def memory_worker(variant: str, set_name: str, device: str) -> None:
    """Run one variant alone and print its transient memory per parameter as JSON."""
    step = VARIANTS[variant](set_name, device)()
    numel = SETS[set_name][0] * SETS[set_name][1]
    for _ in range(2):  # compile, and let a donating variant reach its steady layout
        h.synchronize(device, step())
    holder = getattr(step, "holder", None)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        transient = torch.cuda.max_memory_allocated() - held
        result = {
            "transient_B_per_param": transient / numel,
            "peak_GB": torch.cuda.max_memory_allocated() / 1e9,
        }
    else:
        if not h.reset_peak_rss():
            raise RuntimeError("cannot reset the peak RSS mark (/proc/self/clear_refs)")
        rss = h.current_rss_bytes()
        for _ in range(5):
            h.synchronize(device, step())
        transient = max(0, h.peak_rss_bytes() - rss)
        result = {
            "transient_B_per_param": transient / numel,
            "transient_MB": transient / 1e6,
            "peak_rss_GB": h.peak_rss_bytes() / 1e9,
        }
    if holder is not None:
        # Checked after each of two more steps (outside the measured window, since reading
        # the pointers makes views): an allocator can hand a pure update's new tensors the
        # addresses of earlier inputs, so one equal set of pointers proves nothing.
        before_ptrs = _ptrs(holder)
        same = []
        for _ in range(2):
            h.synchronize(device, step())
            same.append(_ptrs(holder) == before_ptrs)
        result["reuses_buffers"] = all(same)
    print(json.dumps(result))


def _ptrs(holder: dict | None) -> list[int] | None:
    if holder is None:
        return None
    trees = (holder["params"], holder["state"])
    return [t.data_ptr() for t in pn.tree.leaves(trees) if t.dim() > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--sets", nargs="+", default=["16M", "200x79k", "2000x64"], choices=list(SETS)
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the per-variant memory subprocesses"
    )
    parser.add_argument(
        "--compile-opt-step-max-leaves",
        type=int,
        default=1,
        help="skip torch.compile(opt.step) above this many tensors (its compile takes minutes at 200)",
    )
    parser.add_argument(
        "--memory-worker", nargs=2, metavar=("VARIANT", "SET"), help=argparse.SUPPRESS
    )
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
    if args.memory_worker:
        memory_worker(*args.memory_worker, args.device)
        return

    print(f"AdamW update step, device {args.device}: {h.environment(args.device)}\n")
    for set_name in args.sets:
        count, size = SETS[set_name]
        variants = []
        for name in args.variants:
            v = h.Variant(name, VARIANTS[name](set_name, args.device))
            if name == "torch.compile(opt.step)" and count > args.compile_opt_step_max_leaves:
                v.skipped = f"compile takes minutes at {count} tensors (PERF_NOTES); raise --compile-opt-step-max-leaves"
            variants.append(v)
        steps_per_round = max(1, min(50, 2_000_000 // (count * size)))
        h.run_interleaved(variants, args.device, args.rounds, args.warmup, steps_per_round)
        memory = None
        if not args.no_memory:
            memory = {}
            for v in variants:
                if v.step is None:
                    continue
                m = h.measure_in_subprocess(__file__, [v.name, set_name, "--device", args.device])
                if "error" in m:
                    memory[v.name] = m["error"]
                else:
                    reuse = {True: ", reuses buffers", False: ", new buffers"}.get(
                        m.get("reuses_buffers"), ""
                    )
                    memory[v.name] = f"{m['transient_B_per_param']:.1f} B/param{reuse}"
        for v in variants:
            v.step = None  # free the data before the next set
        title = f"{set_name}: {count} tensor(s) x {size:,} = {count * size / 1e6:.1f}M params, median of {args.rounds} interleaved rounds, order shuffled per round"
        print(h.table(variants, "torch.optim fused", title, memory) + "\n", flush=True)


if __name__ == "__main__":
    main()
