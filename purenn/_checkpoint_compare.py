"""Where two checkpoint structure records differ: the first path, what each side has there."""

from __future__ import annotations

from ._checkpoint_record import Node, join, shown

__all__ = ["first_mismatch"]


def _what(rec: Node) -> str:
    kind = rec["kind"]
    if kind == "tensor":
        return f"a {rec['dtype']} tensor of shape {tuple(rec['shape'])}"
    if kind == "none":
        return "None"
    if kind in ("params", "dict"):
        keys = rec["keys"]
        listed = ", ".join(map(repr, keys[:6])) + (", ..." if len(keys) > 6 else "")
        return f"{'Params' if kind == 'params' else 'a dict'} with keys [{listed}]"
    if kind in ("tuple", "list"):
        return f"a {kind} of {len(rec['children'])}"
    return f"a {rec['class'].partition(':')[2]}"


def first_mismatch(
    expected: Node, got: Node, path: str = "", names: tuple[str, str] = ("like", "the checkpoint")
) -> str | None:
    """Where and how record `got` differs from `expected`: structure, static fields, shapes, dtypes.

    Both records come from `describe`, so they are well formed. Returns None when they match.
    """
    exp_name, got_name = names
    where = f"at '{shown(path)}'"
    kind = expected["kind"]
    if got["kind"] != kind or (kind == "node" and got["class"] != expected["class"]):
        return f"{where}, {exp_name} has {_what(expected)} but {got_name} has {_what(got)}"
    if kind == "tensor":
        for field in ("shape", "dtype"):
            if got[field] != expected[field]:
                value = (lambda v: tuple(v)) if field == "shape" else (lambda v: v)
                return (
                    f"{where}, {exp_name} has {field} {value(expected[field])} but {got_name} "
                    f"has {value(got[field])}"
                )
        return None
    if kind == "none":
        return None
    if kind in ("params", "dict", "node"):
        key = "fields" if kind == "node" else "keys"
        exp_keys, got_keys = expected[key], got[key]
        for k in exp_keys:
            if k not in got_keys:
                return f"at '{join(path, k)}', {exp_name} has an entry but {got_name} does not"
        for k in got_keys:
            if k not in exp_keys:
                return f"at '{join(path, k)}', {got_name} has an entry but {exp_name} does not"
        if exp_keys != got_keys:
            return (
                f"{where}, the same keys in another order: {exp_name} has {exp_keys}, "
                f"{got_name} has {got_keys}"
            )
        entries = exp_keys
    else:
        entries = [str(i) for i in range(len(expected["children"]))]
        if len(got["children"]) != len(entries):
            return f"{where}, {exp_name} has {_what(expected)} but {got_name} has {_what(got)}"
    for name, value in expected.get("static", {}).items():
        other = got["static"][name]
        if other != value or type(other) is not type(value):
            owner = expected["class"].partition(":")[2]
            return (
                f"at '{join(path, name)}' (a static field of {owner}), {exp_name} has "
                f"{value!r} but {got_name} has {other!r}"
            )
    for entry, exp_child, got_child in zip(
        entries, expected["children"], got["children"], strict=True
    ):
        found = first_mismatch(exp_child, got_child, join(path, entry), names)
        if found is not None:
            return found
    return None
