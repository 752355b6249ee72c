"""`pn.jit`: torch.compile over flattened leaves, with buffer donation (outputs written into donated inputs)."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from . import _rebuild
from ._config import config
from ._donation import (
    check_aliasing,
    check_alive,
    donation_is_safe,
    loose_tensor_paths,
    pack_large,
)
from ._donation import nodes as node_list
from ._errors import DonatedError
from ._guard import debug_check
from ._packed import Layout, Packed, try_pack
from ._params import Params
from ._treeutil import listed

__all__ = ["Jitted", "jit"]

_DEAD = (
    "{arg} was donated to {fn} (call {call}), which wrote its results into this tree's buffers; "
    "the tree is no longer usable. Use the value that call returned, or pass a copy "
    "(pn.tree.map(torch.clone, tree)) if you need to keep it."
)


class Jitted:
    """A function compiled by `pn.jit`; call it like the original. See `pn.jit`.

    It keeps a cache of compiled variants, one per argument structure (and static
    leaf values), and counts its calls for error messages.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        donate_argnums: tuple[int, ...],
        compile: bool | None,
        options: dict[str, Any],
    ) -> None:
        self.fn = fn
        self.donate_argnums = donate_argnums
        self._compile = compile
        self._options = {"dynamic": False, **options}
        self._name = getattr(fn, "__qualname__", type(fn).__name__)
        try:
            self._arg_names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            self._arg_names = []
        self._cache: dict[Any, Callable[..., Any]] = {}
        self._calls = 0
        self._variants = 0
        self._warned: set[Any] = set()
        functools.update_wrapper(self, fn)

    @property
    def cache_size(self) -> int:
        """How many variants have been built (one per argument structure and `pn.config.jit` setting)."""
        return len(self._cache)

    def _compiling(self) -> bool:
        # Read at every call, so that setting pn.config.jit takes effect on the next call.
        return config.jit if self._compile is None else self._compile

    def _arg(self, i: int) -> str:
        name = self._arg_names[i] if i < len(self._arg_names) else None
        return f"argument {i} ({name})" if name else f"argument {i}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._calls += 1
        for i in self.donate_argnums:
            if i >= len(args):
                raise TypeError(
                    f"pn.jit({self._name}): donate_argnums has {i}, but the call passed {len(args)} positional "
                    "arguments (donated arguments must be passed positionally)"
                )
        if config.debug:
            self._debug_check(args, kwargs)
        # Fast path, taken by every call after the first with the same structure: one walk per
        # argument without path strings, and cheap filters for the donation checks. Anything
        # unusual (a dead tree, an unhashable leaf, a new structure, trees to pack, buffers that
        # might overlap) goes through `_call_checked`, which does every check in full and
        # raises the errors, with paths.
        nodes: dict[int, list[Any]] = {i: [] for i in self.donate_argnums}
        try:
            flat = [
                _rebuild.flatten(a, mark_scalars=True, with_paths=False, nodes=nodes.get(i))
                for i, a in enumerate(args)
            ]
            kw_flat = _rebuild.flatten(kwargs, mark_scalars=True, with_paths=False)
        except (DonatedError, TypeError):
            return self._call_checked(args, kwargs)
        key = (tuple(f[0] for f in flat), kw_flat[0], self._compiling())
        entry = self._cache.get(key)
        tensors = [t for f in flat for t in f[1]]
        tensors.extend(kw_flat[1])
        if entry is None or not donation_is_safe(tensors, entry.donated, entry.kept):
            return self._call_checked(args, kwargs)
        return self._run(entry, key, tensors, nodes, stacklevel=3)

    def _debug_check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """`pn.config.debug`: refuse arguments whose leaves were changed in place (MutatedError)."""
        named = {f"{self._name}: {self._arg(i)}": a for i, a in enumerate(args)}
        named.update({f"{self._name}: keyword argument {k!r}": a for k, a in kwargs.items()})
        for where, tree in named.items():
            check_alive(tree, where)
        debug_check(**named)

    def _call_checked(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The call with every check done in full: alive trees, aliasing, packing, a new variant."""
        for i, arg in enumerate(args):
            check_alive(arg, f"{self._name}: {self._arg(i)}")
        for name, arg in kwargs.items():
            check_alive(arg, f"{self._name}: keyword argument {name!r}")
        donated = set(self.donate_argnums)
        flat = [_rebuild.flatten(a, self._arg(i), mark_scalars=True) for i, a in enumerate(args)]
        kw_flat = _rebuild.flatten(kwargs, "keyword", mark_scalars=True)
        nodes: dict[int, list[Any]] = {}
        if donated:
            self._check_donation(flat, kw_flat, donated)
            originals = args
            # First call: move donated Params into flat buffers (one copy); from then on they arrive packed.
            args = tuple(pack_large(a) if i in donated else a for i, a in enumerate(args))
            flat = [
                _rebuild.flatten(a, self._arg(i), mark_scalars=True) if a is not original else f
                for i, (a, original, f) in enumerate(zip(args, originals, flat, strict=True))
            ]
            for i in donated:
                nodes[i] = list(node_list(originals[i]))
                if args[i] is not originals[i]:
                    nodes[i] += node_list(args[i])

        key = (tuple(f[0] for f in flat), kw_flat[0], self._compiling())
        entry = self._cache.get(key)
        if entry is None:
            self._warn_loose(args, donated)
            donated_positions, donated_paths, start = [], [], 0
            for i, f in enumerate(flat):
                if i in donated:
                    donated_positions.extend(range(start, start + len(f[1])))
                    donated_paths.extend(f[2])
                start += len(f[1])
            entry = self._cache[key] = self._build(key, tuple(donated_positions), donated_paths)
        tensors = [t for f in flat for t in f[1]]
        tensors.extend(kw_flat[1])
        return self._run(entry, key, tensors, nodes, stacklevel=4)

    def _run(
        self,
        entry: _Entry,
        key: Any,
        tensors: list[torch.Tensor],
        nodes: dict[int, list[Any]],
        stacklevel: int,
    ) -> Any:
        """Call the variant on the flat tensors, rebuild its output, and kill the donated trees.

        `stacklevel` makes a warning point at the caller of `__call__`.
        """
        inputs = tensors
        if entry.scalars:
            inputs = list(tensors)
            for i in entry.scalars:
                inputs[i] = tensors[i].view(1)  # see _rebuild.SCALAR
        out_desc, unused, out_tensors, returned = entry.fn(*inputs)
        if returned:
            out_tensors = list(out_tensors)
            for k, i in returned:
                out_tensors.insert(k, tensors[i])
        out = _rebuild.build(out_desc, iter(out_tensors))
        if unused and key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"pn.jit({self._name}): no output matches the shape, dtype and device of donated "
                f"{list(unused)}; their buffers were not reused",
                stacklevel=stacklevel,
            )
        for i, donated_nodes in nodes.items():
            message = _DEAD.format(arg=self._arg(i), fn=self._name, call=self._calls)
            for node in donated_nodes:
                node._kill(message)
        return out

    def _warn_loose(self, args: tuple[Any, ...], donated: set[int]) -> None:
        """Warn (once per variant) about donated tensors that cannot be marked dead."""
        for i in sorted(donated):
            loose = loose_tensor_paths(args[i], self._arg(i))
            if loose:
                warnings.warn(
                    f"pn.jit({self._name}): donated {listed(loose, 3)} is not inside a pn.Params or optimizer "
                    "state, so it cannot be marked dead: its buffer is written, and a later use "
                    "reads the new values instead of raising pn.DonatedError. Put such tensors in a "
                    "pn.Params, or do not use them after the call.",
                    stacklevel=4,
                )

    def _check_donation(self, flat: list[Any], kw_flat: Any, donated: set[int]) -> None:
        donated_leaves = [
            (p, t) for i in sorted(donated) for p, t in zip(flat[i][2], flat[i][1], strict=True)
        ]
        kept = [
            (p, t)
            for i, f in enumerate(flat)
            if i not in donated
            for p, t in zip(f[2], f[1], strict=True)
        ]
        kept += list(zip(kw_flat[2], kw_flat[1], strict=True))
        check_aliasing(donated_leaves, kept, f"pn.jit({self._name})")
        for path, t in donated_leaves:
            if t.requires_grad:
                raise ValueError(
                    f"pn.jit({self._name}): donated input '{path}' requires grad; a buffer that autograd may "
                    "still need cannot be overwritten. Detach it, or do not donate it."
                )

    def _build(
        self, key: Any, donated_positions: tuple[int, ...], donated_paths: list[str]
    ) -> _Entry:
        """The function of flat tensors, compiled unless disabled, with the positions of its inputs.

        The function returns `(output description, unused donated paths, output tensors,
        returned inputs)`. When compiled, its 0-d inputs must be passed as 1-element views
        (see `_rebuild.SCALAR`); `returned inputs` lists `(output position, input position)`
        for the 0-d inputs it returns unchanged, which are left out of the output tensors.
        """
        arg_descs, kw_desc, use_compile = key
        fn = self.fn
        donated_layouts = [
            layout for i in self.donate_argnums for layout in _packed_layouts(arg_descs[i])
        ]
        n_inputs, scalars = _rebuild.input_positions((*arg_descs, kw_desc))
        if not use_compile:
            scalars = ()  # eager code takes 0-d tensors as they are

        def flat_fn(
            *tensors: torch.Tensor,
        ) -> tuple[Any, tuple[str, ...], tuple[Any, ...], tuple[tuple[int, int], ...]]:
            if scalars:
                tensors = tuple(t.view(()) if i in scalars else t for i, t in enumerate(tensors))
            leaves = iter(tensors)
            args = [_rebuild.build(desc, leaves) for desc in arg_descs]
            out = fn(*args, **_rebuild.build(kw_desc, leaves))
            unused: tuple[str, ...] = ()
            if donated_positions:
                out = _repack(out, donated_layouts)
            # The description is made of constants; returning it (rather than storing it in a
            # closure) keeps torch.compile from guarding on it and recompiling.
            desc, results, _ = _rebuild.flatten(out, "output")
            if donated_positions:
                results, unused = _write_into(
                    results, [tensors[i] for i in donated_positions], donated_paths
                )
            returned: tuple[tuple[int, int], ...] = ()
            if scalars:
                # A 0-d input returned as it is (a hyperparameter, a donated count written in
                # place) goes back as the caller's own tensor: returning the graph's 0-d view of
                # it would make torch.compile rebuild that view on every call.
                returned = tuple(
                    (k, i) for k, r in enumerate(results) for i in scalars if r is tensors[i]
                )
                taken = {k for k, _ in returned}
                results = [r for k, r in enumerate(results) if k not in taken]
            return desc, unused, tuple(results), returned

        # torch.compile caches (and caps recompiles, 8 by default) per code object; a code
        # object of its own per variant keeps jitted functions from evicting each other.
        self._variants += 1
        flat_fn.__code__ = flat_fn.__code__.replace(
            co_name=f"{_identifier(self._name)}_variant{self._variants}"
        )
        donated = set(donated_positions)
        kept = tuple(i for i in range(n_inputs) if i not in donated)
        compiled = (
            torch.compile(flat_fn, **_with_guard_filter(self._options)) if use_compile else flat_fn
        )
        return _Entry(compiled, scalars, donated_positions, kept)


# The closure constants of `flat_fn` that describe a variant. pn.jit picks the variant by
# their value (its cache key), and nothing mutates them, so dynamo's guards on them (several
# hundred for a model's tree, checked on every call) can never fail.
_OWN_CONSTANTS = ("arg_descs", "kw_desc", "donated_layouts", "donated_positions", "scalars")
_OWN_PREFIXES = tuple(f"{name}{sep}" for name in _OWN_CONSTANTS for sep in ("[", "."))


def _is_own_constant(source: str) -> bool:
    """Whether a guard's source (e.g. `arg_descs[0][1]`) lies inside a variant constant."""
    return source in _OWN_CONSTANTS or source.startswith(_OWN_PREFIXES)


# torch.compile takes options={"guard_filter_fn": ...} since the release that added GuardFilterEntry.
_HAS_GUARD_FILTER = hasattr(torch._dynamo.types, "GuardFilterEntry")


def _with_guard_filter(options: dict[str, Any]) -> dict[str, Any]:
    """`torch.compile` options that drop dynamo's guards on pn.jit's own variant constants.

    A `guard_filter_fn` the caller gave in `options=` still sees (and may drop) the rest.
    With `mode=`, which torch.compile does not take together with `options=`, all guards stay.
    """
    if not _HAS_GUARD_FILTER or options.get("mode") is not None:
        return options  # torch.compile takes mode= or options=, not both
    inner = dict(options.get("options") or {})
    user_filter = inner.get("guard_filter_fn")

    def keep(entries: Any) -> list[bool]:
        own = [_is_own_constant(entry.name) for entry in entries]
        if user_filter is None:
            return [not o for o in own]
        return [not o and bool(k) for o, k in zip(own, user_filter(entries), strict=True)]

    inner["guard_filter_fn"] = keep
    return {**options, "options": inner}


class _Entry(NamedTuple):
    """A built variant: its function of flat tensors and the roles of their positions."""

    fn: Callable[..., Any]
    scalars: tuple[int, ...]  # 0-d inputs, passed as 1-element views when compiled
    donated: tuple[int, ...]
    kept: tuple[int, ...]


def _packed_layouts(desc: tuple[Any, ...]) -> list[Layout]:
    """The layouts of the packed Params in an argument description."""
    if desc[0] == "packed":
        return [desc[1]]
    if desc[0] in ("custom", "namedtuple", "tuple", "list", "dict"):
        return [layout for child in desc[-1] for layout in _packed_layouts(child)]
    return []


def _repack(tree: Any, layouts: list[Layout]) -> Any:
    """`tree` with each unpacked Params that fits a donated layout packed into it (so it can be donated).

    Rules that are not elementwise (factored second moments, per-layer trust ratios)
    return unpacked trees; packing them into the donated layout (one cat per buffer,
    fused with the copy into the donated buffer) lets their state reuse its buffers too.
    """
    if isinstance(tree, Params):
        if tree._packed is None:
            for layout in layouts:
                packed = try_pack(tree, layout)
                if packed is not None:
                    return Params._from_packed(Packed(layout, packed))
        return tree
    flat = getattr(type(tree), "_pn_flatten", None)
    if flat is not None:
        children, data, _ = flat(tree)
        return type(tree)._pn_unflatten(data, [_repack(c, layouts) for c in children])
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_repack(c, layouts) for c in tree))
    if type(tree) in (tuple, list):
        return type(tree)(_repack(c, layouts) for c in tree)
    if type(tree) is dict:
        return {k: _repack(v, layouts) for k, v in tree.items()}
    return tree


def _write_into(
    results: list[torch.Tensor], donated: list[torch.Tensor], paths: list[str]
) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    """Write each result into the first unused donated buffer of its shape, dtype and device.

    Returns the results (donated buffers where written) and the paths of the donated
    buffers no result could use.
    """
    # A result that views a donated buffer (the donated tree's own p["w"], returned as it
    # was) would show whatever is written into that buffer: it is copied first.
    results = [
        r.clone() if r._base is not None and any(r._base is d for d in donated) else r
        for r in results
    ]
    # A result that *is* a donated input (passed through unchanged) keeps that buffer: it is
    # reserved first, so no other result is written over the values it must return.
    passed_through = {j for j, d in enumerate(donated) if any(r is d for r in results)}
    free = [j for j in range(len(donated)) if j not in passed_through]
    written = []
    with torch.no_grad():
        for result in results:
            if any(result is donated[j] for j in passed_through):
                written.append(result)
                continue
            match = next((j for j in free if _same_kind(donated[j], result)), None)
            if match is None:
                written.append(result)
                continue
            free.remove(match)
            donated[match].copy_(result)
            written.append(donated[match])
    return written, tuple(paths[j] for j in free if donated[j].numel() > 0)


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _same_kind(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


def jit(
    fn: Callable[..., Any] | None = None,
    donate_argnums: int | Sequence[int] = (),
    *,
    compile: bool | None = None,
    **compile_options: Any,
) -> Any:
    """Compile a pure function of purenn trees with `torch.compile`, optionally donating arguments.

    Arguments are flattened into tensors (a packed Params counts as its few flat
    buffers), so the compiled graph sees tensors only; non-tensor leaves are
    compiled in as constants (pass changing numbers as tensors). One compilation
    per argument structure; later calls with same-shaped inputs reuse it, and
    inductor's on-disk cache makes a new process's first call cheap.

    Donation: for each argument in `donate_argnums`, the outputs are written into
    its buffers instead of new memory, so a training step needs no second copy
    of params or optimizer state. On the first call donated Params are packed into
    flat buffers (one copy); from the second call on every output leaf has the
    `data_ptr` of the donated leaf it replaces. After the call the donated
    argument objects are dead: any use raises `pn.DonatedError`. Tensors taken out
    of a donated tree earlier now see the new values.

    Args:
        fn: the pure function (also usable as `@pn.jit(donate_argnums=...)`).
        donate_argnums: positions of the arguments to donate.
        compile: False runs eagerly with the same semantics (donation included);
            None follows `pn.config.jit`.
        **compile_options: passed to `torch.compile` (`mode=`, `fullgraph=`, `backend=`...).

    Raises:
        DonatedError: an argument is a tree consumed by an earlier donating call.
        ValueError: donated inputs share memory with each other or with another input.

    Example:
        >>> @pn.jit(donate_argnums=(0, 1))
        ... def train_step(params, opt_state, x, y):
        ...     grads = pn.grad(loss_fn)(params, x, y)
        ...     params, opt_state = pn.step(opt, params, grads, opt_state)
        ...     return params, opt_state
        >>> params, opt_state = train_step(params, opt_state, x, y)
    """
    donate = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
    for i in donate:
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise ValueError(
                f"pn.jit: donate_argnums must be non-negative ints, got {donate_argnums!r}"
            )
    if len(set(donate)) != len(donate):
        raise ValueError(f"pn.jit: donate_argnums lists an argument twice: {donate_argnums!r}")
    if fn is None:
        return lambda f: Jitted(f, donate, compile, compile_options)
    if not callable(fn):
        raise TypeError(f"pn.jit expects a callable, got {type(fn).__name__}")
    return Jitted(fn, donate, compile, compile_options)
