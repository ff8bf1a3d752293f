"""Typed attack settings: read a preset's, an override's or a recipe entry's values by the field
types of the dataclass that declares them, and check their ranges.

Why: a preset value used to be typed from hand-written key lists, and any other key became a
string, so a new float setting reached its method as text. Now the declaring dataclass (an attack
method's parameters, attacks/methods.py, or AttackSpec's common fields) is the one source: its
annotations give the type (`int`, `float`, `bool`, `str`, `X | None`, `tuple[float, ...]` for an eps
grid) and `setting(...)` metadata the range (`min`, `above`, `max`, `choices`) and whether a string
is a path (resolved when read). Wrong types and values outside the range are one line that names
the key, where it was read and what fits.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import Field, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import AttackError, ConfigError


def setting(
    default: Any = None,
    *,
    min: float | None = None,  # noqa: A002  (the bound's name in messages)
    above: float | None = None,
    max: float | None = None,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    path: bool = False,
    speed: bool = False,
) -> Any:
    """A parameter field with its default and what fits: `min` <= v, `above` < v, v <= `max`,
    v in `choices`; `path`: a file or folder, resolved to an absolute path ("" means none);
    `speed`: it changes how fast, not what (out of the run fingerprint, so a resumed run may change it)."""
    meta = {"min": min, "above": above, "max": max, "choices": choices, "path": path, "speed": speed}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None and v is not False})


@lru_cache(maxsize=None)
def hints(cls: type) -> dict[str, Any]:
    """A dataclass's field annotations, evaluated."""
    return typing.get_type_hints(cls)


def _base(annotation) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `X`, `X | None` or `Optional[X]`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def allows_none(annotation) -> bool:
    return _base(annotation)[1]


def parse_number(value: Any) -> float:
    """8/255, "8/255", 0.03, "0.03" -> float; ValueError on anything else (bools included)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        s = value.strip()
        if "/" in s:
            num, den = s.split("/", 1)
            v = float(Fraction(num.strip())) / float(Fraction(den.strip()))
        else:
            v = float(s)
    else:
        raise ValueError(value)
    if not math.isfinite(v):
        raise ValueError(value)
    return v


def _integer(value: Any) -> int:
    if hasattr(value, "item") and not isinstance(value, (bool, str, bytes)):
        value = value.item()
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 10.0 is 10, as it always was
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(value)


def coerce(key: str, value: Any, annotation, f: Field | None, where: str) -> Any:
    """`value` as the type `annotation` says (None where the type allows it); ConfigError if it is not one."""
    kind, optional = _base(annotation)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} needs a value in {where}")
    if f is not None and f.metadata.get("path"):
        s = str(value).strip()
        return str(Path(s).expanduser().resolve()) if s else ""
    if typing.get_origin(kind) is tuple:  # an eps grid
        return tuple(parse_eps(value))
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if kind is int:
            return _integer(value)
        if kind is float:
            return parse_number(value)
        if kind is str:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError(value)
            return str(value).strip()
    except (ValueError, ZeroDivisionError, ArithmeticError):
        what = {bool: "true or false", int: "an integer", float: "a number (fractions such as 8/255 too)"}
        raise ConfigError(f"{key} must be {what.get(kind, 'text')} in {where}, got {value!r}") from None
    return value


def check_range(key: str, value: Any, f: Field, where: str) -> None:
    """AttackError if `value` lies outside what `f`'s metadata allows."""
    if value is None:
        return
    m = f.metadata
    if "choices" in m and value not in m["choices"]:
        raise AttackError(f"{where}: {key} must be {' or '.join(m['choices'])}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, above, hi = m.get("min"), m.get("above"), m.get("max")
    bad = (lo is not None and value < lo) or (above is not None and value <= above) or (hi is not None and value > hi)
    if bad:
        if lo == 1 and hi is None and isinstance(value, int):
            fits = "a positive integer"
        elif hi is not None and (lo is not None or above is not None):
            fits = f"in {'[' if above is None else '('}{lo if above is None else above:g}, {hi:g}]"
        else:
            fits = f">= {lo:g}" if lo is not None else f"> {above:g}" if above is not None else f"<= {hi:g}"
        verb = "lie" if fits.startswith("in ") else "be"
        raise AttackError(f"{where}: {key} must {verb} {fits}, got {value!r}")


def parse_eps_value(value: Any) -> float:
    """8/255, "8/255", 0.03, "0.03" -> float; ConfigError on anything else."""
    if isinstance(value, bool):
        raise ConfigError(f"bad eps value {value!r}; write numbers or fractions such as 8/255")
    if isinstance(value, (int, float)):
        v = float(value)
    else:
        s = str(value).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                v = float(Fraction(num.strip())) / float(Fraction(den.strip()))
            else:
                v = float(s)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"bad eps value {s!r}; write numbers or fractions such as 8/255, "
                f"separated by commas (e.g. 1/255,2/255,0.03)"
            ) from None
    if not math.isfinite(v):
        raise ConfigError(f"bad eps value {value!r}; eps must be a finite number")
    return v


def parse_eps(value: Any) -> list[float]:
    """A comma-separated string, a number or a list of them -> a list of floats (unsorted)."""
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars, tensors
        value = value.tolist()
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
        if not parts:
            raise ConfigError(f"bad eps value {value!r}; write numbers or fractions such as 8/255")
        return [parse_eps_value(p) for p in parts]
    if isinstance(value, (list, tuple)):
        out: list[float] = []
        for v in value:
            out += parse_eps(v) if isinstance(v, str) else [parse_eps_value(v)]
        return out
    try:  # numpy scalars, tensors
        return [parse_eps_value(float(value))]
    except (TypeError, ValueError):
        raise ConfigError(f"bad eps value {value!r}; write numbers or fractions such as 8/255") from None
