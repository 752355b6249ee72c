"""`pn.nn.residual`: `block(x) + shortcut(x)`, the skip connection of ResNets and transformers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch

from .. import random as pnr
from .._errors import ShapeError, StateError, TreeMismatchError
from .._params import Params
from ._model import EMPTY, Model, join, layer_name
from ._sequential import as_model

__all__ = ["Residual", "residual"]

_KIND = "residual"


def _optional_model(layer: Any) -> Model | None:
    return None if layer is None else as_model(layer, "residual: shortcut")


@attrs.frozen
class Residual(Model):
    """`block(x) + shortcut(x)`; the shortcut is the identity when None.

    Params and state of the block live under `"block"`, those of the shortcut under
    `"shortcut"` (omitted when empty), like a torch module with attributes `block` and
    `shortcut`. The two outputs must have the same shape.
    """

    block: Model = attrs.field(converter=lambda layer: as_model(layer, "residual: block"))
    shortcut: Model | None = attrs.field(default=None, converter=_optional_model)

    def _children(self) -> dict[str, Model]:
        children = {"block": self.block}
        if self.shortcut is not None:
            children["shortcut"] = self.shortcut
        return children

    def init(self, key: torch.Tensor) -> Params:
        keys = pnr.split(key)
        made = {
            name: child.init(keys[i]) for i, (name, child) in enumerate(self._children().items())
        }
        return Params({name: p for name, p in made.items() if len(p)})

    def init_state(self) -> Params:
        made = {name: child.init_state() for name, child in self._children().items()}
        return Params({name: s for name, s in made.items() if len(s)})

    @property
    def has_state(self) -> bool:
        return any(child.has_state for child in self._children().values())

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        children = self._children()
        for tree, what in ((params, "params"), (state, "state")):
            unexpected = [join(path, name) for name in tree if name not in children]
            if unexpected:
                raise TreeMismatchError(
                    f"{what} for the {layer_name(_KIND, path)} have unexpected entries "
                    f"{unexpected} (it has {sorted(children)}). Were these {what} made by another model?"
                )
        keys = None if key is None else pnr.split(key)
        outputs, new_state = [], {}
        for i, (name, child) in enumerate(children.items()):
            if child.has_state and name not in state:
                raise StateError(
                    f"state has no entry '{join(path, name)}' for the stateful layer there"
                )
            y, child_state = child._forward(
                params[name] if name in params else EMPTY,
                x,
                state=state[name] if name in state else EMPTY,
                key=None if keys is None else keys[i],
                train=train,
                path=join(path, name),
            )
            outputs.append(y)
            if len(child_state):
                new_state[name] = child_state
        out, skip = outputs if len(outputs) == 2 else (outputs[0], x)
        if (
            not isinstance(out, torch.Tensor)
            or not isinstance(skip, torch.Tensor)
            or out.shape != skip.shape
        ):
            shapes = [
                tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                for t in (out, skip)
            ]
            raise ShapeError(
                f"the {layer_name(_KIND, path)} adds the block's output {shapes[0]} to the "
                f"shortcut's {shapes[1]}: they must have the same shape. Give residual a "
                "shortcut that maps x to the block's output shape (e.g. a 1x1 conv2d with the "
                "block's stride)."
            )
        return out + skip, Params(new_state) if new_state else state


def residual(
    block: Model | Callable[[torch.Tensor], torch.Tensor],
    shortcut: Model | Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Residual:
    """A skip connection: `y = block(x) + shortcut(x)`, the shortcut the identity by default.

    Example:
        >>> block = pn.nn.sequential(pn.nn.conv2d(8, 8, 3, padding=1), pn.nn.relu)
        >>> res = pn.nn.residual(block)
        >>> pn.tree.paths(res.init(pn.random.key(0)))
        ['block.0.weight', 'block.0.bias']
    """
    return Residual(block, shortcut)
