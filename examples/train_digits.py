"""Train an MLP on scikit-learn's bundled 8x8 digits with purenn: no optimizer object, no in-place update.

Each iteration is three pure calls: the loss and its gradients, then a step that
returns *new* params and a new optimizer state. Nothing is mutated, so any earlier
`params` is still intact (see the drift check at the end).

    python examples/train_digits.py            # about 10 s on 2 CPU cores
    python examples/train_digits.py --dropout 0.1
    python examples/train_digits.py --help
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write PNGs without a display
import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits
from tqdm import tqdm

import purenn as pn


def load_data(key: torch.Tensor, test_fraction: float = 0.2) -> tuple[torch.Tensor, ...]:
    """The 1,797 digits as `(N, 64)` float32 features in [0, 1] and `(N,)` labels, split at random."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = pn.random.permutation(key, len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def accuracy(model: pn.nn.Model, params: pn.Params, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model.apply(params, x).argmax(dim=-1) == y).float().mean().item()


def train(
    epochs: int,
    batch_size: int,
    lr: float,
    hidden: list[int],
    seed: int,
    dropout: float = 0.0,
    progress: bool = True,
) -> dict:
    key = pn.random.key(seed)
    data_key, init_key, key = pn.random.split(key, 3)
    x_train, y_train, x_test, y_test = load_data(data_key)

    model = pn.nn.mlp(64, hidden, 10, dropout=dropout)
    params = model.init(init_key)
    opt = pn.optim.adamw(lr, weight_decay=1e-4)
    opt_state = opt.init(params)
    loss_and_grad = pn.value_and_grad(pn.loss(model.apply, pn.losses.cross_entropy))

    initial_params = params
    losses: list[float] = []
    steps_per_epoch = -(-len(x_train) // batch_size)
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress)
    for _ in bar:
        key, shuffle_key = pn.random.split(key)
        order = pn.random.permutation(shuffle_key, len(x_train))
        for batch in order.split(batch_size):
            key, dropout_key = pn.random.split(key)
            loss, grads = loss_and_grad(
                params, x_train[batch], y_train[batch], key=dropout_key, train=True
            )
            params, opt_state = pn.step(opt, params, grads, opt_state)
            losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-steps_per_epoch:]) / steps_per_epoch:.4f}")

    return {
        "model": model,
        "params": params,
        "initial_params": initial_params,
        "opt_state": opt_state,
        "losses": losses,
        "steps_per_epoch": steps_per_epoch,
        "train_accuracy": accuracy(model, params, x_train, y_train),
        "test_accuracy": accuracy(model, params, x_test, y_test),
    }


def plot_losses(losses: list[float], steps_per_epoch: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [
        sum(losses[i : i + steps_per_epoch]) / len(losses[i : i + steps_per_epoch])
        for i in range(0, len(losses), steps_per_epoch)
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(len(losses)), losses, alpha=0.3, lw=0.8, label="per batch")
    ax.plot(
        [steps_per_epoch * (i + 0.5) for i in range(len(epochs))], epochs, lw=2, label="epoch mean"
    )
    ax.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="purenn MLP on 8x8 digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="dropout probability (keys are explicit)"
    )
    parser.add_argument("--plot", type=Path, default=Path("examples/out/digits_loss.png"))
    args = parser.parse_args()

    start = time.perf_counter()
    result = train(args.epochs, args.batch_size, args.lr, args.hidden, args.seed, args.dropout)
    seconds = time.perf_counter() - start
    plot_losses(result["losses"], result["steps_per_epoch"], args.plot)

    moved = pn.tree.diff(result["initial_params"], result["params"])
    print(pn.tree.summary(moved))
    print(f"optimizer state after {int(result['opt_state'].count)} steps:")
    print(result["opt_state"])
    print(f"train accuracy {result['train_accuracy']:.2%}")
    print(
        f"held-out accuracy {result['test_accuracy']:.2%}  ({seconds:.1f} s, {len(result['losses'])} steps)"
    )
    print(f"loss curve written to {args.plot}")


if __name__ == "__main__":
    main()
