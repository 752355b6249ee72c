"""`pn.save` and `pn.load`: atomic, pickle-free checkpoints of any purenn tree (safetensors + a JSON record)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from . import _treeutil
from ._checkpoint_compare import first_mismatch
from ._checkpoint_file import read, to_tensor, write_atomic
from ._checkpoint_rebuild import rebuild
from ._checkpoint_record import describe, encode
from ._donation import check_alive
from ._errors import CheckpointError, CheckpointMismatchError
from ._guard import debug_check

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_VERSION = 1
"""The checkpoint format this purenn writes; it reads this version and older ones."""

PathLike = str | os.PathLike[str]


def save(path: PathLike, tree: Any) -> None:
    """Write `tree` to a checkpoint file at `path`, atomically.

    `tree` is any purenn tree (params, optimizer state, a PRNG key) or a dict of
    named trees, e.g. `{"params": params, "opt_state": opt_state, "key": key}`.
    The file is a safetensors file (tensors, no pickle: loading it runs no code)
    whose metadata holds a JSON structure record (node kinds, Params keys,
    `pn.tree.node` classes with their static fields, each leaf's dtype and shape),
    the purenn and format versions, and a SHA-256 of all of it. Packed Params are
    saved as their leaves, so a checkpoint does not depend on packing. The tree is
    not modified; tensors not already contiguous on the CPU are copied there, one
    at a time, to be written.

    The write is atomic: the file goes to a temporary `.NAME.<random>.tmp` beside
    `path`, is flushed to disk, then renamed over `path`. An interrupted save
    leaves the previous checkpoint intact (a killed process may leave the
    temporary file; see docs/checkpoints.md).

    Args:
        path: the file to write (conventionally `*.safetensors`); its directory must exist.
        tree: the tree to save. Leaves must be dense tensors; dict keys strings;
            static fields of nodes bool, int, float, str, None or tuples of these.

    Raises:
        TypeError: a leaf is not a tensor, or a node cannot be saved (naming its path).
        DonatedError: `tree` was donated to a `pn.jit` call.
        CheckpointError: the file cannot be written (naming it and the OS's reason).

    Example:
        >>> pn.save("ckpt.safetensors", {"params": params, "opt_state": opt_state, "key": key})
        >>> ckpt = pn.load("ckpt.safetensors", like={"params": params, "opt_state": opt_state, "key": key})
    """
    from . import __version__

    target = Path(os.fspath(path))
    check_alive(tree, "pn.save: tree")
    debug_check(tree=tree)
    encoded = encode(tree)
    record = json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "purenn_version": __version__,
            "torch_version": torch.__version__,
            "tree": encoded.record,
        },
        separators=(",", ":"),
    )
    try:
        write_atomic(target, encoded.tensors, record)
    except OSError as err:
        raise CheckpointError(
            f"cannot write checkpoint '{target}': {err.strerror or err}"
            + ("" if target.parent.is_dir() else f" (directory '{target.parent}' does not exist)")
        ) from err


def load(path: PathLike, like: Any = None, device: Any = None) -> Any:
    """Read the tree saved at `path`; with `like`, check it has `like`'s structure, shapes and dtypes.

    The whole file is checked before anything is returned: its safetensors header,
    its structure record and a SHA-256 over both and all tensor data, so a missing,
    truncated or damaged file raises `CheckpointError` (never a partial tree).
    Node classes in the record are looked up among already imported modules, never
    imported, and rebuilt without running their `__init__`.

    Args:
        path: a file written by `pn.save`.
        like: an optional tree the result must match: the same structure (node
            types, Params and dict keys in order, static fields), and at every leaf
            the same shape and dtype. Only structure, shapes, dtypes and devices of
            `like` are read, so tensors on the meta device work as a template.
        device: where to put the loaded tensors. Default: each leaf on the device of
            `like`'s leaf at the same path (CPU where that is meta), or CPU without `like`.

    Returns:
        The saved tree, as fresh tensors that share memory with nothing. Params come
        back unpacked (`pn.jit` packs donated arguments on the first call).

    Raises:
        CheckpointError: the file is missing, unreadable, truncated, corrupted, not a
            purenn checkpoint, of a newer format, or names a node class that is not
            imported. The message names the file and what is wrong.
        CheckpointMismatchError: (a CheckpointError and a TreeMismatchError) the
            checkpoint does not match `like`; the message names the first
            differing path, what `like` has and what the checkpoint has.
        DonatedError: `like` was donated to a `pn.jit` call.

    Example:
        >>> like = {"params": params, "opt_state": opt_state, "key": key}
        >>> ckpt = pn.load("ckpt.safetensors", like=like)
        >>> params, opt_state, key = ckpt["params"], ckpt["opt_state"], ckpt["key"]
    """
    where = f"checkpoint '{os.fspath(path)}'"
    if like is not None:
        check_alive(like, "pn.load: like")
    record_text, items = read(Path(os.fspath(path)), where)
    tree_record = _parse_record(record_text, where)
    tensors = {item[0]: to_tensor(item, where) for item in items}
    del items
    try:
        tree = rebuild(tree_record, tensors)
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {err}") from None
    if like is not None:
        mismatch = first_mismatch(describe(like), describe(tree))
        if mismatch is not None:
            raise CheckpointMismatchError(f"{where} does not match like: {mismatch}")
    return _to_devices(tree, like, device)


def _parse_record(text: str, where: str) -> Any:
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{where}: its structure record is not valid JSON ({err})") from None
    version = record.get("format_version") if isinstance(record, dict) else None
    if type(version) is not int or "tree" not in record:
        raise CheckpointError(f"{where}: its structure record is malformed")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has checkpoint format {version}, written by purenn "
            f"{record.get('purenn_version')}; this purenn reads format {FORMAT_VERSION} and older: "
            "upgrade purenn to load it"
        )
    return record["tree"]


def _to_devices(tree: Any, like: Any, device: Any) -> Any:
    if device is not None:
        target = torch.device(device)
        return _treeutil.tree_map(lambda t: t.to(target), tree)
    if like is None:
        return tree

    def move(t: torch.Tensor, ref: Any) -> torch.Tensor:
        if not isinstance(ref, torch.Tensor) or ref.device.type in ("meta", "cpu"):
            return t
        return t.to(ref.device)

    return _treeutil.tree_map(move, tree, like)
