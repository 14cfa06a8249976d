"""The small value checks every config and entry point shares: whole numbers, finite numbers, closed choices.

Each raises the one :class:`~stdd_fast.errors.ConfigError` wording for its kind, naming the value and what
it must be, and returns the value (so a field can be checked and stored in one line). Torch-free.
"""

from __future__ import annotations

import math
import numbers

from stdd_fast.errors import ConfigError, StddError, choice_error


def check_int(
    name: str,
    value: object,
    low: int = 1,
    high: int | None = None,
    optional: bool = False,
    hint: str = "",
    error: type[StddError] = ConfigError,
) -> int | None:
    """``value`` as an int in ``low..high`` (booleans refused); None too when ``optional``.

    ``hint``: what the value means, said in the error; ``error``: the error type (a ConfigError by default).
    """
    if value is None and optional:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        span = f">= {low}" if high is None else f"in {low}..{high}"
        said = f" ({hint})" if hint else ""
        raise error(f"{name}={value!r}: must be an int {span}" + (" or None" if optional else "") + said)
    return value


def check_number(
    name: str,
    value: object,
    low: float = 0.0,
    strict: bool = True,
    optional: bool = False,
    unit: str = "",
    hint: str = "",
    high: float | None = None,
) -> float | None:
    """``value`` as a finite real number > ``low`` (``strict``) or >= ``low``, and <= ``high`` when given; None too
    when ``optional``.

    ``unit``: what the number counts ("MiB", "seconds"), named in the error; ``hint``: what None or the value means.
    """
    if value is None and optional:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if strict else value >= low) and (high is None or value <= high)
    if not ok:
        what = f"a finite number{' of ' + unit if unit else ''} {'>' if strict else '>='} {low:g}"
        what += "" if high is None else f" and <= {high:g}"
        said = f" ({hint})" if hint else ""
        raise ConfigError(f"{name}={value!r}: must be {what}" + (" or None" if optional else "") + said)
    return value


def check_choice(name: str, value: object, valid: tuple | list) -> object:
    """``value`` when it is one of ``valid``; else the standard error listing them."""
    if not any(value == v and type(value) is type(v) for v in valid):
        raise choice_error(name, value, valid)
    return value
