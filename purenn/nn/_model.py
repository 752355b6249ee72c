"""The model-factory abstraction: `init(key) -> Params`, `apply(params, x, ...)`, `init_state()`."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from .._errors import ShapeError, StateError, TreeMismatchError
from .._guard import debug_check
from .._params import Params
from .._treeutil import flatten_with_paths

__all__ = ["EMPTY", "Model", "join", "layer_name", "take_params"]

EMPTY = Params()


class Model(abc.ABC):
    """A description of a computation that holds no tensors.

    `init(key)` makes its parameters, `apply(params, x)` runs it as a pure function,
    `init_state()` makes its non-trained state (e.g. BatchNorm running statistics).
    Subclasses implement `init`, `_forward` and, when stateful, `init_state` and
    `has_state`. A model whose call takes extra keyword arguments (attention masks)
    names them in `_options` and accepts them as keyword arguments of `_forward`.
    """

    # Extra keyword arguments `apply` forwards to `_forward`; None: any (pn.from_torch models).
    _options: ClassVar[frozenset[str] | None] = frozenset()

    @abc.abstractmethod
    def init(self, key: torch.Tensor) -> Params:
        """Fresh parameters drawn from `key` (a `pn.random.key`), shaped and distributed as torch.nn's."""

    def init_state(self) -> Params:
        """The model's initial state: empty for stateless models, running statistics for BatchNorm."""
        return EMPTY

    @property
    def has_state(self) -> bool:
        """Whether `apply` needs `state=` (the model carries state such as running statistics)."""
        return False

    @abc.abstractmethod
    def _forward(
        self,
        params: Params,
        x: Any,
        *,
        state: Params,
        key: torch.Tensor | None,
        train: bool,
        path: str,
    ) -> tuple[Any, Params]:
        """Compute `(y, new_state)`; `path` names this model inside its parent, for error messages."""

    def apply(
        self,
        params: Params,
        x: Any,
        *,
        key: torch.Tensor | None = None,
        train: bool = False,
        state: Params | None = None,
        **options: Any,
    ) -> Any:
        """Run the model. Pure: neither `params`, `state` nor `x` is modified.

        Args:
            params: the tree from `init` (or from training).
            x: the input; shape as the first layer expects (e.g. `(N, in_features)`).
            key: a PRNG key for randomness in training (dropout); required then.
            train: training mode (dropout active, BatchNorm uses and updates batch statistics).
            state: the model's state from `init_state()`; required for stateful models.
            **options: extra keyword arguments of models that take them, e.g. the masks of
                `multi_head_attention`, or the forward arguments of a `pn.from_torch` module.

        Returns:
            `y` when `state` is not given; `(y, new_state)` when it is.

        Raises:
            StateError: a stateful model called without `state=`.
            TypeError: an option the model does not take.
            TreeMismatchError / ShapeError: params or input not what the model expects
                (the message names the layer path).
        """
        if not isinstance(params, Params):
            raise TypeError(
                f"params must be pn.Params (from model.init(key)), got {type(params).__name__}"
                + ("; wrap a dict with pn.Params(...)" if isinstance(params, dict) else "")
            )
        if state is None and self.has_state:
            paths = ", ".join(_paths(self.init_state())[:4])
            raise StateError(
                f"{type(self).__name__} has state ({paths}, ...): call "
                "model.apply(params, x, state=state, train=...) with state = model.init_state(); "
                "it returns (y, new_state)"
            )
        if state is not None and not isinstance(state, Params):
            raise TypeError(
                f"state must be pn.Params (from model.init_state()), got {type(state).__name__}"
            )
        allowed = self._options
        if allowed is not None and (unknown := sorted(set(options) - allowed)):
            takes = ", ".join(f"{name}=" for name in sorted(allowed)) or "no other"
            raise TypeError(
                f"{type(self).__name__}.apply got unexpected keyword arguments {unknown}: "
                f"it takes key=, train=, state= and {takes} keyword arguments"
            )
        debug_check(params=params, state=state)
        y, new_state = self._forward(
            params,
            x,
            state=EMPTY if state is None else state,
            key=key,
            train=train,
            path="",
            **options,
        )
        return y if state is None else (y, new_state)


def _paths(tree: Params) -> list[str]:
    return flatten_with_paths(tree)[0]


def layer_name(kind: str, path: str) -> str:
    """`"linear layer at '0'"`, or `"linear layer"` for a model applied on its own."""
    return f"{kind} at '{path}'" if path else kind


def join(path: str, entry: str) -> str:
    return f"{path}.{entry}" if path else entry


def take_params(
    params: Params, kind: str, path: str, expected: Mapping[str, Sequence[int] | None]
) -> list[torch.Tensor]:
    """The named leaves of one layer's params, after checking names and shapes.

    `expected` maps each name to its shape, or None when the layer does not have
    that parameter (e.g. `bias=False`); the result has None there.
    """
    wanted = {name for name, shape in expected.items() if shape is not None}
    got = set(params)
    if got != wanted:
        missing = sorted(wanted - got)
        extra = sorted(got - wanted)
        detail = "; ".join(
            part
            for part in (
                f"missing {[join(path, m) for m in missing]}" if missing else "",
                f"unexpected {[join(path, e) for e in extra]}" if extra else "",
            )
            if part
        )
        raise TreeMismatchError(
            f"params for the {layer_name(kind, path)} do not fit it: {detail} "
            f"(expected keys {sorted(wanted)}, got {sorted(got)}). Were these params made by another model?"
        )
    out: list[Any] = []  # None where the layer lacks that parameter
    for name, shape in expected.items():
        if shape is None:
            out.append(None)
            continue
        leaf = params[name]
        if tuple(leaf.shape) != tuple(shape):
            raise ShapeError(
                f"params '{join(path, name)}' of the {layer_name(kind, path)} has shape "
                f"{tuple(leaf.shape)}, expected {tuple(shape)}. Were these params made by another model?"
            )
        out.append(leaf)
    return out
