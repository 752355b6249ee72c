"""`from_torch_state` and `to_torch_state`: resume a torch.optim optimizer in purenn, and back."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .. import _treeutil
from .._errors import StateError, TreeMismatchError
from ._base import GradientTransformation
from ._multi_transform import MultiTransformState, multi_transform
from ._subset import select
from ._twins import Twin, factory_kwargs, group_values, scalar_dtype, twin_of

__all__ = ["from_torch_state", "to_torch_state"]


def _identity(t: torch.Tensor) -> tuple[Any, ...]:
    """What makes two tensors the same parameter: the same memory, seen the same way."""
    return (t.device, t.dtype, tuple(t.shape), t.stride(), t.data_ptr())


def _match(optimizer: torch.optim.Optimizer, params: Any, owner: str) -> list[list[int]]:
    """For each param group, the indices of the `params` leaves its params are, in the group's order.

    By identity when every leaf is one of the optimizer's params (the same tensor or a
    view of the same memory), else by order: the optimizer's params, group after group,
    are the leaves in leaf order (as `torch.optim.X(module.parameters())` and
    `pn.from_torch(module)` give them).
    """
    paths, leaves, _ = _treeutil.flatten_with_paths(params)
    groups = [list(g["params"]) for g in optimizer.param_groups]
    flat = [(gi, pi, p) for gi, group in enumerate(groups) for pi, p in enumerate(group)]
    if len(flat) != len(leaves):
        raise TreeMismatchError(
            f"{owner}: the optimizer has {len(flat)} params (in {len(groups)} groups) but params "
            f"has {len(leaves)} leaves"
        )
    position = {_identity(p): k for k, (_, _, p) in enumerate(flat)}
    identity = [position.get(_identity(leaf)) for leaf in leaves]
    by_identity = None not in identity and len(set(identity)) == len(leaves)
    order = dict(enumerate(identity)) if by_identity else {k: k for k in range(len(leaves))}
    where = {k: index for index, k in order.items()}
    matched: list[list[int]] = [[] for _ in groups]
    for k, (gi, pi, p) in enumerate(flat):
        index = where[k]
        leaf = leaves[index]
        if leaf.shape != p.shape or leaf.dtype != p.dtype:
            raise TreeMismatchError(
                f"{owner}: param '{paths[index]}' has shape {tuple(leaf.shape)} and dtype "
                f"{leaf.dtype}, but the optimizer's param {pi} of group {gi}, matched to it by "
                f"order, has {tuple(p.shape)} and {p.dtype}: pass params in the optimizer's order"
            )
        matched[gi].append(index)
    return matched


def _count(twin: Twin, entries: list[dict[str, Any]], paths: list[str], owner: str) -> int:
    """The one step count of a group's params (torch keeps one per param)."""
    if not twin.has_step:  # SGD: a momentum buffer means at least one step was taken
        return int(any(e.get("momentum_buffer") is not None for e in entries))
    steps = [int(float(e["step"])) if "step" in e else 0 for e in entries]
    if len(set(steps)) > 1:
        at = next(i for i, s in enumerate(steps) if s != steps[0])
        raise StateError(
            f"{owner}: param '{paths[at]}' has taken {steps[at]} steps but '{paths[0]}' "
            f"{steps[0]}; a purenn rule keeps one step count, so every param of a group must "
            "have stepped together"
        )
    return steps[0]


def _group_state(
    twin: Twin,
    rule: GradientTransformation,
    sub_params: Any,
    entries: list[dict[str, Any]],
    owner: str,
) -> Any:
    """The purenn state of one param group: the rule's init, with torch's count and buffers.

    `entries` are torch's per-param states in the leaf order of `sub_params`.
    """
    state = rule.init(sub_params)
    sub_paths, sub_leaves, spec = _treeutil.flatten_with_paths(sub_params)
    count = _count(twin, entries, sub_paths, owner)
    if count == 0:
        return state
    fields: dict[str, Any] = {"count": torch.tensor(count, dtype=torch.int64)}
    for name in twin.buffers:
        if getattr(state, name) is None:
            continue
        tensors = []
        for path, leaf, entry in zip(sub_paths, sub_leaves, entries, strict=True):
            value = entry.get(name)
            if not isinstance(value, torch.Tensor) or value.shape != leaf.shape:
                raise StateError(
                    f"{owner}: the torch state of '{path}' has no {name!r} buffer of its shape"
                )
            tensors.append(value.detach().to(leaf.dtype).clone())
        fields[name] = _treeutil.unflatten(spec, tensors)
    if "mu_product" in attrs.fields_dict(twin.state_class):
        fields["mu_product"] = entries[0]["mu_product"].detach().clone()
    if "row_var" in attrs.fields_dict(twin.state_class):
        for name, factored in (("row_var", True), ("col_var", True), ("variance", False)):
            keep = [(leaf.dim() > 1) == factored for leaf in sub_leaves]
            found = [entry.get(name) for entry in entries]
            for path, k, value in zip(sub_paths, keep, found, strict=True):
                if k and not isinstance(value, torch.Tensor):
                    raise StateError(f"{owner}: the torch state of '{path}' has no {name!r}")
            copies = [
                v.detach().clone() if isinstance(v, torch.Tensor) and k else None
                for v, k in zip(found, keep, strict=True)
            ]
            fields[name] = select(sub_paths, copies, keep)
    return attrs.evolve(state, **fields)


def from_torch_state(
    torch_optimizer: torch.optim.Optimizer, params: Any
) -> tuple[GradientTransformation, Any]:
    """The pn.optim rule and state that continue `torch_optimizer` exactly: `(rule, state)`.

    Supports SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam and
    Adafactor (the exact classes). The rule is built from the param groups'
    hyperparameters; the state holds copies of the optimizer's buffers and its step
    count, so the optimizer may go on being used. `params[i]` is matched to the
    optimizer's params by identity when every leaf is one of them (or a view of the
    same memory), else by order: the optimizer's params, group after group, in leaf
    order (true for `torch.optim.X(module.parameters())` and `pn.from_torch(module)`).
    Several param groups become a `multi_transform` with labels `"group0"`, `"group1"`...

    To use a schedule, build the rule yourself with the same options and keep the
    state: e.g. `pn.optim.adamw(schedule, weight_decay=0.1)` with the state from here
    continues at the torch optimizer's step count. SGD keeps no step count in torch:
    the state's count is 1 if momentum buffers exist, else 0.

    Raises:
        TypeError: an optimizer class without a twin.
        TreeMismatchError: params that do not match the optimizer's params, naming a path.
        StateError: params of one group that have taken different numbers of steps.

    Example:
        >>> module = torch.nn.Linear(3, 2)
        >>> torch_opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
        >>> ...  # train some steps, or torch_opt.load_state_dict(torch.load(path))
        >>> model, params = pn.from_torch(module)
        >>> opt, state = pn.optim.from_torch_state(torch_opt, params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    owner = "from_torch_state"
    if not isinstance(torch_optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{owner}: expected a torch.optim.Optimizer, got {type(torch_optimizer).__name__}"
        )
    twin = twin_of(torch_optimizer, owner)
    paths, leaves, spec = _treeutil.flatten_with_paths(params)
    matched = _match(torch_optimizer, params, owner)
    if len(matched) == 1:  # one group: the state has the params' own structure
        group = torch_optimizer.param_groups[0]
        rule = twin.factory(**factory_kwargs(twin, group))
        by_leaf = dict(zip(matched[0], group["params"], strict=True))
        entries = [torch_optimizer.state.get(by_leaf[i], {}) for i in range(len(leaves))]
        return rule, _group_state(twin, rule, params, entries, owner)
    rules, states = [], []
    for group, indices in zip(torch_optimizer.param_groups, matched, strict=True):
        rule = twin.factory(**factory_kwargs(twin, group))
        chosen = set(indices)
        keep = [i in chosen for i in range(len(leaves))]
        # The sub-tree lists its leaves in tree order; take torch's entries in that order.
        by_leaf = dict(zip(indices, group["params"], strict=True))
        entries = [torch_optimizer.state.get(by_leaf[i], {}) for i in range(len(leaves)) if keep[i]]
        states.append(_group_state(twin, rule, select(paths, leaves, keep), entries, owner))
        rules.append(rule)
    labels = [""] * len(leaves)
    for gi, indices in enumerate(matched):
        for index in indices:
            labels[index] = f"group{gi}"
    rule = multi_transform(
        {f"group{gi}": r for gi, r in enumerate(rules)}, _treeutil.unflatten(spec, labels)
    )
    state = MultiTransformState(
        inner={f"group{gi}": s for gi, s in enumerate(states)},
        paths=tuple(paths),
        labels=tuple(labels),
    )
    return rule, state


def to_torch_state(
    state: Any, params: Any, torch_optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """A `state_dict()` that makes `torch_optimizer` continue exactly from a purenn state.

    `torch_optimizer.load_state_dict(pn.optim.to_torch_state(state, params, torch_optimizer))`.
    `torch_optimizer` must be of the twin class (e.g. torch.optim.AdamW for an
    `adamw` state; torch.optim.Adam also takes a decoupled one); its params are
    matched to the `params` leaves as in `from_torch_state`. Its param groups' other
    options (foreach, fused, ...) are kept; the hyperparameters and flags are the
    state's. A `multi_transform` state of twin rules maps to several param groups:
    each group's params must share one label. The tensors are copies.

    Raises:
        TypeError: the state is not the optimizer class's twin state.
        TreeMismatchError: params that do not match the optimizer's or the state's.

    Example:
        >>> torch_opt = torch.optim.AdamW(module.parameters())
        >>> torch_opt.load_state_dict(pn.optim.to_torch_state(state, params, torch_opt))
    """
    owner = "to_torch_state"
    twin = twin_of(torch_optimizer, owner)
    paths, leaves, _ = _treeutil.flatten_with_paths(params)
    matched = _match(torch_optimizer, params, owner)
    if isinstance(state, MultiTransformState):
        if tuple(paths) != state.paths:
            raise TreeMismatchError(f"{owner}: the multi_transform state was made for other params")
        group_states = []
        for gi, indices in enumerate(matched):
            found = {state.labels[i] for i in indices}
            if len(found) != 1:
                raise StateError(
                    f"{owner}: the params of param group {gi} have labels {sorted(found)}; each "
                    "group's params must share one multi_transform label"
                )
            group_states.append(state.inner[found.pop()])
    else:
        group_states = [state] * len(matched)
    saved_state: dict[int, dict[str, Any]] = {}
    saved_groups = []
    position = 0
    for gi, (group, indices, sub_state) in enumerate(
        zip(torch_optimizer.param_groups, matched, group_states, strict=True)
    ):
        if not isinstance(sub_state, twin.state_class):
            raise TypeError(
                f"{owner}: param group {gi} of a torch.optim.{twin.torch_class.__name__} needs a "
                f"{twin.state_class.__name__}, got a {type(sub_state).__name__}"
            )
        values = group_values(twin, sub_state)
        if twin.torch_class is torch.optim.AdamW and not values.get("decoupled_weight_decay"):
            raise TypeError(
                f"{owner}: torch.optim.AdamW always decouples weight decay, but this is an adam "
                "(coupled) state: load it into torch.optim.Adam"
            )
        saved = {k: v for k, v in group.items() if k != "params"}
        saved.update({k: v for k, v in values.items() if k in saved})
        saved["params"] = list(range(position, position + len(indices)))
        saved_groups.append(saved)
        entries = _param_entries(
            twin, sub_state, [paths[i] for i in indices], [leaves[i] for i in indices]
        )
        for entry in entries:
            saved_state[position] = entry
            position += 1
    return {"state": saved_state, "param_groups": saved_groups}


def _by_path(tree: Any) -> dict[str, torch.Tensor] | None:
    if tree is None:
        return None
    paths, leaves, _ = _treeutil.flatten_with_paths(tree)
    return dict(zip(paths, leaves, strict=True))


def _param_entries(
    twin: Twin, state: Any, paths: list[str], leaves: list[torch.Tensor]
) -> list[dict[str, Any]]:
    """torch.optim's per-param states for these leaves: step, buffers and mu_product (copies)."""
    count = int(state.count)
    names = [
        *twin.buffers,
        *(("row_var", "col_var", "variance") if hasattr(state, "row_var") else ()),
    ]
    buffers = {name: _by_path(getattr(state, name)) for name in names}
    entries = []
    for path, leaf in zip(paths, leaves, strict=True):
        entry: dict[str, Any] = {}
        if twin.has_step:
            entry["step"] = torch.tensor(float(count), dtype=scalar_dtype())
        elif "momentum_buffer" in twin.buffers:
            entry["momentum_buffer"] = None  # torch SGD starts its buffer at the first step
        for name, flat in buffers.items():
            if flat is None or (not twin.has_step and count == 0):
                continue
            if name in ("row_var", "col_var", "variance") and (leaf.dim() > 1) != (
                name != "variance"
            ):
                continue
            if path not in flat:
                raise TreeMismatchError(
                    f"to_torch_state: the state's {name} has no entry for param '{path}'"
                )
            entry[name] = flat[path].detach().clone()
        if hasattr(state, "mu_product"):
            entry["mu_product"] = state.mu_product.detach().clone()
        entries.append(entry)
    return entries
