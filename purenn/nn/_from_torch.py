"""`pn.from_torch`: any `torch.nn.Module` as a pure model over explicit params and buffers."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch.func import functional_call
from torch.utils._pytree import tree_map_only

from .._errors import ShapeError, StateError, TreeMismatchError
from .._params import Params
from .._treeutil import is_inexact
from ._model import Model
from ._torch_randomness import concrete_seed, keyed_randomness, seeded_generators

__all__ = ["TorchModel", "from_torch"]


class TorchModel(Model):
    """A `torch.nn.Module` run through `torch.func.functional_call` with explicit params and state.

    Holds private structural copies of the module on the meta device, one in training
    and one in evaluation mode, and the module's buffers at conversion time as the
    initial state. The copies are made without copying any parameter or buffer data,
    and tied parameters and buffers stay tied in them (GPT-style weight tying, a
    submodule used twice): a tied tensor is one entry of params or state, and a new
    value for it reaches every use. `apply` never touches the original module. Keyword
    arguments of `apply` beyond `key`, `train` and `state` go to the module's `forward`
    (e.g. `src_key_padding_mask=` of a TransformerEncoder).

    In training, dropout inside the module draws from the explicit `key` (see
    `_torch_randomness`): the same key gives the same output, no global RNG is consumed,
    and `torch.func.vmap` over per-member keys works. `inplace=True` dropout returns a new
    tensor instead of writing into its input. In evaluation the module runs untouched
    (torch's fused fast paths included).
    """

    _options: ClassVar[frozenset[str] | None] = None

    __slots__ = ("_devices", "_initial_state", "_shapes", "_skeletons")

    def __init__(self, module: torch.nn.Module) -> None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"pn.from_torch expects a torch.nn.Module, got {type(module).__name__}")
        self._devices = sorted(
            {str(t.device) for t in (*module.parameters(), *module.buffers())}
        ) or ["cpu"]
        skeleton = _structural_copy(module, lambda t: torch.empty_like(t, device="meta"))
        # Two copies, so apply never flips a shared module between train and eval.
        self._skeletons = {False: skeleton.eval(), True: copy.deepcopy(skeleton).train()}
        self._shapes = {name: (tuple(p.shape), p.dtype) for name, p in module.named_parameters()}
        self._initial_state = Params.from_state_dict(
            {name: b.detach().clone() for name, b in module.named_buffers()}
        )

    @property
    def module_type(self) -> str:
        return type(self._skeletons[False]).__name__

    def __repr__(self) -> str:
        return f"pn.from_torch({self.module_type}, {len(self._shapes)} params, {len(self._initial_state)} buffers)"

    @property
    def has_state(self) -> bool:
        return len(self._initial_state) > 0

    def init_state(self) -> Params:
        """Copies of the module's buffers as they were when it was converted."""
        return Params.from_state_dict(
            {k: v.clone() for k, v in self._initial_state.to_state_dict().items()}
        )

    def init(self, key: torch.Tensor) -> Params:
        """Fresh params from the module's own `reset_parameters()`, seeded from `key`.

        Each module's `reset_parameters()` (or, without one, its private
        `_reset_parameters()`, as `nn.MultiheadAttention` and `nn.Transformer` have) runs
        children first, in the order torch's constructors run them, so the parameters are
        drawn from the distributions a freshly built module has. The keys are those of
        the params `pn.from_torch` returns. A tied parameter is reset by each module that
        owns it, and the last reset wins.

        Raises:
            ValueError: if some parameter is not set by any module's `reset_parameters`,
                naming it.
        """
        seed = concrete_seed(key)
        if seed is None:
            raise ValueError(
                "a pn.from_torch model initialises through torch's reset_parameters(), seeded "
                "from the key, so the key must be a concrete tensor: it cannot vary under "
                "torch.func.vmap. Initialise the members in a loop and pn.tree.stack them."
            )
        device = self._devices[0]
        # Parameters start as NaN, so one that no reset_parameters() writes in full shows up
        # (a parent's reset may cover its children's parameters, or leave them alone).
        module = _structural_copy(self._skeletons[False], lambda t: _unset(t, device))
        owned: set[str] = set()  # parameters of modules with a reset, for integer ones
        with seeded_generators(seed, self._cuda_devices()):
            # Children before parents, as torch's constructors run: a parent's reset may
            # override its children's (MultiheadAttention zeroes out_proj.bias).
            for prefix, sub in reversed(list(module.named_modules())):
                reset = _reset_of(sub)
                if reset is not None:
                    reset()
                    owned.update(
                        f"{prefix}.{n}" if prefix else n
                        for n, _ in sub.named_parameters(recurse=False)
                    )
        uncovered = [
            name
            for name, p in module.named_parameters()
            if (torch.isnan(p.detach()).any() if is_inexact(p) else name not in owned)
        ]
        if uncovered:
            raise ValueError(
                f"cannot re-initialise {uncovered}: no reset_parameters() of their modules (or of "
                "the modules above them) sets them. Use the params returned by "
                "pn.from_torch(module), or initialise them yourself."
            )
        return Params.from_state_dict({n: p.detach() for n, p in module.named_parameters()})

    def _cuda_devices(self) -> list[int]:
        return [torch.device(d).index or 0 for d in self._devices if d.startswith("cuda")]

    def _check_params(self, params: Params) -> dict[str, torch.Tensor]:
        flat = params.to_state_dict()
        missing = [n for n in self._shapes if n not in flat]
        extra = [n for n in flat if n not in self._shapes]
        if missing or extra:
            raise TreeMismatchError(
                f"params do not fit the converted {self.module_type}: "
                + "; ".join(
                    s
                    for s in (
                        f"missing {missing}" if missing else "",
                        f"unexpected {extra}" if extra else "",
                    )
                    if s
                )
                + ". Were these params made by another model?"
            )
        for name, (shape, _) in self._shapes.items():
            if tuple(flat[name].shape) != shape:
                raise ShapeError(
                    f"params '{name}' has shape {tuple(flat[name].shape)}, but the {self.module_type} "
                    f"has it as {shape}"
                )
        return flat

    def _check_state(self, state: Params) -> dict[str, torch.Tensor]:
        flat = state.to_state_dict()
        expected = self._initial_state.to_state_dict()
        if set(flat) != set(expected):
            missing = sorted(set(expected) - set(flat))
            extra = sorted(set(flat) - set(expected))
            raise StateError(
                f"state does not fit the converted {self.module_type} (its buffers): "
                f"missing {missing}, unexpected {extra}. Use model.init_state()."
            )
        for name, buffer in expected.items():
            if flat[name].shape != buffer.shape:
                raise StateError(
                    f"state '{name}' has shape {tuple(flat[name].shape)}, but the "
                    f"{self.module_type}'s buffer has {tuple(buffer.shape)}. Use model.init_state()."
                )
        return flat

    def _forward(
        self,
        params: Params,
        x: Any,
        *,
        state: Params,
        key: Any,
        train: bool,
        path: str,
        **forward_kwargs: Any,
    ) -> tuple[Any, Params]:
        tensors = self._check_params(params)
        # The module may update buffers in place (BatchNorm in training), or write into its
        # inputs (ReLU(inplace=True) first): give it copies, so apply stays pure.
        buffers = {name: b.clone() for name, b in self._check_state(state).items()}
        args, forward_kwargs = tree_map_only(
            torch.Tensor, torch.clone, (x if isinstance(x, tuple) else (x,), forward_kwargs)
        )
        randomness = (
            keyed_randomness(key, self.module_type, self._cuda_devices())
            if train
            else contextlib.nullcontext()
        )
        try:
            with randomness:
                y = functional_call(
                    self._skeletons[train],
                    {**tensors, **buffers},
                    args,
                    forward_kwargs,
                    strict=True,
                )
        except RuntimeError as error:
            if not any(word in str(error) for word in ("shape", "size", "dtype", "scalar type")):
                raise
            shapes = [
                str(tuple(a.shape)) if isinstance(a, torch.Tensor) else type(a).__name__
                for a in args
            ]
            dtypes = [str(a.dtype) for a in args if isinstance(a, torch.Tensor)]
            raise ShapeError(
                f"the converted {self.module_type} failed on input of shape {', '.join(shapes)} "
                f"(dtype {', '.join(dtypes)}): {error}"
            ) from error
        new_state = Params.from_state_dict(buffers) if buffers else state
        return y, new_state


def _reset_of(module: torch.nn.Module) -> Callable[[], None] | None:
    for name in ("reset_parameters", "_reset_parameters"):
        reset = getattr(module, name, None)
        if callable(reset):
            return reset
    return None


def _unset(t: torch.Tensor, device: str) -> torch.Tensor:
    """Storage for a parameter before `reset_parameters()`: NaN where the dtype has it."""
    out = torch.empty_like(t, device=device)
    return out.fill_(float("nan")) if is_inexact(out) else out


def _structural_copy(
    module: torch.nn.Module, make: Callable[[torch.Tensor], torch.Tensor]
) -> torch.nn.Module:
    """A deep copy of `module` whose parameters and buffers are `make(tensor)`, not copies.

    Each parameter or buffer object is made once, so ties survive: the copy's tied
    entries are again one object. `module.to(...)` or `to_empty(...)` would instead
    give every owning module its own new tensor, and a plain deepcopy first copies
    all the data. Parameters stay parameters with their `requires_grad`.
    """
    memo: dict[int, Any] = {}
    for _, tensor in module.named_parameters(remove_duplicate=False):
        if id(tensor) not in memo:
            memo[id(tensor)] = torch.nn.Parameter(make(tensor), requires_grad=tensor.requires_grad)
    for _, tensor in module.named_buffers(remove_duplicate=False):
        if id(tensor) not in memo:
            memo[id(tensor)] = make(tensor).requires_grad_(tensor.requires_grad)
    return copy.deepcopy(module, memo)


def from_torch(module: torch.nn.Module) -> tuple[TorchModel, Params]:
    """Convert a `torch.nn.Module` into `(model, params)`.

    `params` are detached copies of the module's parameters, keyed by their
    `named_parameters()` names (tied parameters appear once, under their first name,
    as in `model.init(key)`). Buffers (BatchNorm running statistics) become
    `model.init_state()`, tied ones once too. `model.apply(params, x)`
    equals `module(x)` for the same values; in training mode with state, the
    buffers the module would update in place are returned as new state instead.
    `x` may be a tuple of positional inputs; keyword arguments of `apply` other than
    `key`, `train` and `state` are passed to the module's forward. Dropout in training
    draws from `key` (required then), so `torch.func.vmap` over keys and stacked params
    gives independent members.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
        >>> model, params = pn.from_torch(net)
        >>> y, state = model.apply(params, torch.randn(16, 4), state=model.init_state(), train=True)
        >>> encoder, p = pn.from_torch(torch.nn.TransformerEncoder(layer, num_layers=2))
        >>> y = encoder.apply(p, x, src_key_padding_mask=pad, key=pn.random.key(0), train=True)
    """
    model = TorchModel(module)
    params = Params.from_state_dict(
        {name: p.detach().clone() for name, p in module.named_parameters()}
    )
    return model, params
