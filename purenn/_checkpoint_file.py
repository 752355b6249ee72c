"""Checkpoint files: atomic, streamed safetensors writes with a checksum; whole-file reads with clear errors.

The writer produces the safetensors format itself (an 8-byte little-endian header
size, a JSON header padded with spaces to a multiple of 8, then each tensor's raw
little-endian bytes, largest element size first): it streams tensors one at a time
into a file descriptor it controls, so it can `fsync` exactly the file it renames,
copies no tensor that is already a contiguous CPU tensor, and needs no NumPy.
Reading goes through the safetensors library, which validates the header against
the data.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch

from ._checkpoint_record import NATIVE_CODES, stored
from ._errors import CheckpointError

__all__ = ["StoredTensor", "checksum", "read", "temp_pattern", "to_tensor", "write_atomic"]

StoredTensor = tuple[str, str, tuple[int, ...], Any]
"""(name, safetensors dtype code, shape, raw bytes) of one tensor as stored in a file."""

_CODE_DTYPES = {code: dtype for dtype, code in NATIVE_CODES.items()}
_ITEMSIZE = {code: torch.empty((), dtype=d).element_size() for d, code in NATIVE_CODES.items()}
RECORD_KEY, CHECKSUM_KEY = "purenn.structure", "purenn.sha256"
_PLACEHOLDER = "0" * 64  # a SHA-256 hex digest's length: the header's size does not change


def temp_pattern(path: Path) -> str:
    """The glob of `save`'s temporary files for `path`, e.g. `.model.safetensors.*.tmp`."""
    return f".{path.name}.*.tmp"


def _order(names_codes: Iterable[tuple[str, str]]) -> list[str]:
    """File order: largest element size first (so every tensor is aligned to its element size), then name."""
    return [n for n, _ in sorted(names_codes, key=lambda nc: (-_ITEMSIZE.get(nc[1], 1), nc[0]))]


def checksum(record: str, tensors: Iterable[StoredTensor]) -> str:
    """SHA-256 of the structure record and every stored tensor (name, dtype code, shape, bytes), in file order.

    safetensors has no checksum of its own; this one makes any damage to a file
    detectable, whether it hits the record, a header field or tensor data.
    """
    by_name = {item[0]: item for item in tensors}
    h = _Hasher(record)
    for name in _order((n, item[1]) for n, item in by_name.items()):
        _, code, shape, data = by_name[name]
        h.add(name, code, shape, data)
    return h.hexdigest()


class _Hasher:
    def __init__(self, record: str) -> None:
        self._h = hashlib.sha256(record.encode("utf-8"))

    def add(self, name: str, code: str, shape: tuple[int, ...], data: Any) -> None:
        head = json.dumps([name, code, list(shape), len(data)])
        self._h.update(b"\0" + head.encode("utf-8") + b"\0")
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _raw(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy (and without NumPy)."""
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr())).cast("B")


def _header(layout: list[tuple[str, str, list[int], int]], metadata: dict[str, str]) -> bytes:
    entries: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, code, shape, nbytes in layout:
        entries[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write(fd: int, tensors: Mapping[str, torch.Tensor], record: str) -> None:
    """Write a checkpoint into the empty file `fd`: header (checksum placeholder), data, final header."""
    codes = {name: NATIVE_CODES.get(t.dtype, "U8") for name, t in tensors.items()}
    layout = []
    for name in _order(codes.items()):
        t = tensors[name]
        native = t.dtype in NATIVE_CODES
        shape = list(t.shape) if native else [t.numel() * t.element_size()]
        layout.append((name, codes[name], shape, t.numel() * t.element_size()))
    metadata = {RECORD_KEY: record, CHECKSUM_KEY: _PLACEHOLDER}
    header = _header(layout, metadata)
    _write_all(fd, header)
    h = _Hasher(record)
    for name, code, shape, _ in layout:
        source = stored(tensors[name])  # at most one tensor's copy alive at a time
        data = _raw(source)  # borrows source's memory: source stays referenced while it is used
        h.add(name, code, tuple(shape), data)
        _write_all(fd, data)
        del data, source
    final = _header(layout, {**metadata, CHECKSUM_KEY: h.hexdigest()})  # same size as `header`
    os.lseek(fd, 0, os.SEEK_SET)
    _write_all(fd, final)


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new, empty file beside `path` (same directory, so the final rename is atomic), opened for writing.

    Named `.{name}.{random}.tmp`: never the target's name, and hidden from a plain `ls`.
    Created with mode 0o666 so the process umask applies, as for any new file.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def write_atomic(path: Path, tensors: Mapping[str, torch.Tensor], record: str) -> None:
    """Write a checkpoint at `path` so that `path` is always either the old file or the complete new one.

    The data goes to a temporary file in the same directory, is flushed to disk
    (`fsync`), and only then renamed over `path` (`os.replace`, atomic on POSIX and
    Windows); the directory is then flushed so the rename itself survives a power
    loss. On any error the temporary file is removed. A process killed mid-write
    (SIGKILL, power loss) can leave a temporary file behind, never a damaged `path`.
    """
    fd, tmp = _open_temp(path)
    try:
        _write(fd, tensors, record)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Not every platform or file system can fsync a directory (Windows cannot open one);
    # the file is complete either way, only the rename's durability is at stake.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read(path: Path, where: str) -> tuple[str, list[StoredTensor]]:
    """The structure record and the tensors of the checkpoint at `path`, checked against its checksum.

    The file is read whole (no memory map): a save that replaces it meanwhile
    cannot tear the read, and a file truncated meanwhile cannot crash the process
    (as a memory-mapped read would, with SIGBUS).

    Raises:
        CheckpointError: naming `where` and what is wrong (missing, unreadable,
            truncated, not safetensors, not purenn's, damaged).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"{where} is a directory, not a checkpoint file") from None
    except OSError as err:
        raise CheckpointError(f"cannot read {where}: {err.strerror or err}") from err
    metadata = _metadata(data, where)
    record = metadata.get(RECORD_KEY)
    if record is None:
        raise CheckpointError(
            f"{where} is not a purenn checkpoint: its safetensors metadata has no {RECORD_KEY!r} "
            "record (a plain safetensors file can be read with safetensors.torch.load_file)"
        )
    try:
        items = safetensors.deserialize(data)
    except Exception as err:  # the Rust parser's SafetensorError, or anything it raises
        raise CheckpointError(
            f"{where} is truncated or corrupted: safetensors says {err}"
        ) from None
    del data
    tensors = [(name, item["dtype"], tuple(item["shape"]), item["data"]) for name, item in items]
    if metadata.get(CHECKSUM_KEY) != checksum(record, tensors):
        raise CheckpointError(
            f"{where} is corrupted: its content does not match the SHA-256 recorded when it was "
            "saved (the file was damaged or changed after pn.save wrote it)"
        )
    return record, tensors


def _metadata(data: bytes, where: str) -> dict[str, str]:
    """Parse the safetensors header (an 8-byte little-endian size, then JSON) for its `__metadata__`."""
    if len(data) < 8:
        raise CheckpointError(
            f"{where} is truncated: it has {len(data)} bytes, fewer than the 8 of a safetensors header size"
        )
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise CheckpointError(
            f"{where} is truncated or not a safetensors file: its header claims {size} bytes but only "
            f"{len(data) - 8} follow"
        )
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(
            f"{where} is corrupted or not a safetensors file: its header is not valid JSON ({err})"
        ) from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(header, dict) or (
        meta is not None
        and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values()))
    ):
        raise CheckpointError(f"{where} is corrupted: its safetensors header is malformed")
    return meta or {}


def to_tensor(item: StoredTensor, where: str) -> torch.Tensor:
    """A fresh CPU tensor (its own storage) from a stored tensor's bytes."""
    name, code, shape, data = item
    dtype = _CODE_DTYPES.get(code)
    if dtype is None:
        raise CheckpointError(
            f"{where} holds tensor {name!r} of safetensors dtype {code}, which purenn never writes"
        )
    buffer = (
        data if isinstance(data, bytearray) else bytearray(data)
    )  # writable, owned by the tensor
    if len(buffer) == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype).reshape(shape)
