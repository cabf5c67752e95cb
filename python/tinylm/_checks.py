"""Argument checks shared by the Python facade: one strict rule for integers and ids.

An integer argument must be a Python ``int`` or a NumPy integer (never a bool, a float or
a string); a sequence of ids must be a list, tuple or range of such integers or a 1-D
integer array. Anything else is a ``TypeError`` naming the argument, and a value out of
range a ``ValueError`` that gives the range, so nothing is silently truncated or parsed.
"""

from __future__ import annotations

import math

import numpy as np

#: Token ids are stored as 32-bit unsigned integers in the core.
MAX_ID = 2**32 - 1
#: The largest finite float32: a setting the core keeps in float32 must not exceed it.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def int_arg(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    number = int(value)  # type: ignore[call-overload]
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {number}")
    return number


def float_arg(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    float32: bool = True,
) -> float:
    """``value`` (an int or float, finite) as a float in ``[low, high]`` (or ``(low, high]``);
    with ``float32`` (a setting the core keeps in float32) the float32 it becomes must be
    in the range too, so ``top_p=1e-300`` (0 in float32) is refused as itself."""
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(
        value, (bool, np.bool_)
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    number = float(value)
    too_low = number <= low if low_open else number < low
    if not math.isfinite(number) or too_low or number > high:
        raise ValueError(f"{name} must be {_range_text(low, high, low_open)}, got {number}")
    if float32:
        with np.errstate(over="ignore", under="ignore"):
            narrowed = float(np.float32(number))
        too_low = narrowed <= low if low_open else narrowed < low
        if not math.isfinite(narrowed) or too_low or narrowed > high:
            raise ValueError(
                f"{name} must be {_range_text(low, high, low_open)} in float32, got {number} "
                f"({narrowed:g} in float32)"
            )
    return number


def _range_text(low: float, high: float, low_open: bool) -> str:
    """What ``float_arg`` accepts, in words: an infinite bound is said as "finite"."""
    above = f"> {low:g}" if low_open else f">= {low:g}"
    if math.isinf(low) and math.isinf(high):
        return "a finite number"
    if math.isinf(high):
        return f"{above} and finite"
    if math.isinf(low):
        return f"<= {high:g} and finite"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}]"


def ids_arg(name: str, value: object) -> list[int]:
    """A sequence of token ids (1-D) as a list of ints in ``[0, MAX_ID]``."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be a sequence of int token ids, got a {type(value).__name__}")
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one sequence of ids), got shape {value.shape}")
        if value.dtype.kind not in "iu" or value.dtype == np.bool_:
            raise TypeError(f"{name} must hold integers, got an array of {value.dtype}")
        if value.size and (int(value.min()) < 0 or int(value.max()) > MAX_ID):
            bad = int(value.min()) if int(value.min()) < 0 else int(value.max())
            raise ValueError(f"{name}: token id {bad} is out of range (ids are 0 to {MAX_ID})")
        return [int(i) for i in value.tolist()]
    if not isinstance(value, (list, tuple, range)):
        raise TypeError(
            f"{name} must be a list of int token ids or a 1-D integer array, "
            f"got {type(value).__name__}"
        )
    out = []
    for position, item in enumerate(value):
        if not _is_int(item):
            kind = "a list" if isinstance(item, (list, tuple, np.ndarray)) else type(item).__name__
            raise TypeError(
                f"{name} must hold int token ids, got {kind} ({item!r}) at position {position}"
            )
        number = int(item)
        if not 0 <= number <= MAX_ID:
            raise ValueError(
                f"{name}: token id {number} at position {position} is out of range "
                f"(ids are 0 to {MAX_ID})"
            )
        out.append(number)
    return out
