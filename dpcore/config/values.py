"""Parameter values checked against a configuration field's type hint, and converted where the intent is plain.

Values arrive as YAML scalars (``--set``, papermill, study files), so ``"1e-3"`` may be text and ``10`` an
integer where a float is meant; :func:`coerce` settles both, and refuses anything else with a message that
names the field.
"""

from __future__ import annotations

import numbers
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


_NONE_WORDS = ("none", "null", "~")


def coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the field's type hint and converted where the intent is plain; anything
    else is a ValueError naming the field. Range and choice checks stay in the dataclasses.

    Numbers written as text become numbers (YAML 1.1 reads ``1e-3``, without a dot, as a string), and
    whole numbers given for float fields become floats, so ``epsilon=10`` and ``10.0`` hash alike. A
    tuple field takes a list, or text with commas: ``lora_targets=query`` is the one name ``("query",)``,
    ``lora_targets=query,value`` two.

    >>> coerce("learning_rate", "1e-3", float), coerce("epsilon", 10, float | None)
    (0.001, 10.0)
    >>> coerce("lora_targets", "query, value", tuple[str, ...])
    ('query', 'value')
    >>> coerce("epochs", 2.7, int | None)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be a whole number, got 2.7
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(key, value, args)
    if value is None:
        raise ValueError(f"{key} must be {_describe(hint)}, got None")
    if origin is Literal:
        check(value in args, f"{key} must be one of {args}, got {value!r}")
        return value
    if origin in (tuple, list):
        return _coerce_sequence(key, value, hint)
    rule = _SCALARS.get(hint)
    return value if rule is None else rule(key, value)  # other types: left to the dataclass


def _coerce_union(key: str, value: Any, args: tuple[Any, ...]) -> Any:
    options = [a for a in args if a is not type(None)]
    takes_none = len(options) < len(args)
    # Text "none"/"null" means None where the field could not hold that text anyway (papermill, --set).
    if takes_none and (value is None or (_is_text(value, _NONE_WORDS) and str not in options)):
        return None
    errors = []
    for option in options:
        try:
            return coerce(key, value, option)
        except ValueError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    raise ValueError(f"{key} must be {' or '.join(_describe(a) for a in args)}, got {value!r}")


def _coerce_sequence(key: str, value: Any, hint: Any) -> tuple | list:
    args = typing.get_args(hint) or (Any, ...)
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    check(isinstance(items, list | tuple), f"{key} must be {_describe(hint)}, got {value!r}")
    variadic = typing.get_origin(hint) is list or (len(args) == 2 and args[1] is Ellipsis)
    kinds = [args[0]] * len(items) if variadic else list(args)
    check(
        len(items) == len(kinds),
        f"{key} must have {len(kinds)} values, got {len(items)}: {value!r}",
    )
    out = [coerce(f"{key} item {i + 1}", v, t) for i, (v, t) in enumerate(zip(items, kinds, strict=True))]
    check(all(v != "" for v in out), f"{key} has an empty item: {value!r}")
    return list(out) if typing.get_origin(hint) is list else tuple(out)


def _to_int(key: str, value: Any) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # numpy integers from a table become plain ints (JSON, the hash)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)  # exact, however long
    number = _to_float(key, value, what="a whole number")
    check(number.is_integer(), f"{key} must be a whole number, got {value!r}")
    return int(number)


def _to_float(key: str, value: Any, *, what: str = "a number") -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{key} must be {what}, got {value!r}")


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    check(_is_text(value, ("true", "false")), f"{key} must be true or false, got {value!r}")
    return value.strip().lower() == "true"


def _to_str(key: str, value: Any) -> str:
    # Numbers are refused rather than turned into text: ``data_path=2024`` should be quoted, not guessed.
    hint = f" (quote it: '{value}')" if isinstance(value, int | float) and not isinstance(value, bool) else ""
    check(isinstance(value, str), f"{key} must be text, got {value!r}{hint}")
    return value


def _is_text(value: Any, words: Sequence[str]) -> bool:
    return isinstance(value, str) and value.strip().lower() in words


_SCALARS: dict[Any, Callable[[str, Any], Any]] = {
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    str: _to_str,
}


def _describe(hint: Any) -> str:
    """A type hint in words, for messages."""
    words = {int: "a whole number", float: "a number", bool: "true or false", str: "text", type(None): "None"}
    if hint in words:
        return words[hint]
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            return f"a list of {len(args)} values"
        return f"a list of {_describe(args[0]) if args else 'values'}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))
