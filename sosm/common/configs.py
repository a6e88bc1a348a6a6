"""Validation helpers shared by every config dataclass (``GraphConfig``, ``SOSMConfig``, ``TrainConfig``, ...).

- :func:`reject_unknown_keys` — unknown keys raise ``ValueError`` listing the valid ones, with a
  did-you-mean hint;
- :func:`rename_keys` — old knob names accepted for one release: moved to the new name with a
  ``FutureWarning`` that names the new one; both given is an error;
- :func:`check` — the one "``<label>=<value> is invalid; accepted: <range>``" error;
- :func:`is_int`, :func:`is_number` — type tests that refuse ``bool``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Toy:
    ...     window: int = 1
    >>> reject_unknown_keys({"windw": 2}, Toy, "Toy keys")
    Traceback (most recent call last):
    ...
    ValueError: unknown Toy keys ['windw']; valid keys are ['window']; did you mean 'window'?
"""
from __future__ import annotations

import warnings
from dataclasses import fields
from difflib import get_close_matches
from typing import Any, Mapping


def is_int(value: Any) -> bool:
    """True for Python ints (and NumPy-free int subclasses) but not ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for ints and floats, not ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check(condition: bool, label: str, value: Any, accepted: str) -> None:
    """Raise ``ValueError("<label>=<value!r> is invalid; accepted: <accepted>")`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{label}={value!r} is invalid; accepted: {accepted}")


def reject_unknown_keys(data: Mapping, config_cls: type, label: str = "keys", where: str = "") -> None:
    """Raise ``ValueError`` when ``data`` has keys that are not fields of the dataclass ``config_cls``.

    The message names the unknown keys, lists the valid ones in field order and, for each unknown
    key with a close match (``difflib.get_close_matches``), suggests it.

    Args:
        data: the mapping to check (not modified).
        config_cls: the dataclass whose field names are the valid keys.
        label: what the keys are called after "unknown", e.g. ``"GraphConfig keys"`` (default ``"keys"``).
        where: text put after the unknown keys, e.g. ``" in config section 'optim'"`` (default empty).
    """
    valid = [f.name for f in fields(config_cls)]
    unknown = sorted(set(data) - set(valid), key=str)
    if not unknown:
        return
    suggestions = [(key, match[0]) for key in unknown
                   if isinstance(key, str) and (match := get_close_matches(key, valid, n=1))]
    if len(unknown) == 1 and suggestions:
        hint = f"; did you mean {suggestions[0][1]!r}?"
    elif suggestions:
        hint = "; did you mean " + ", ".join(f"{match!r} for {key!r}" for key, match in suggestions) + "?"
    else:
        hint = ""
    raise ValueError(f"unknown {label} {unknown}{where}; valid keys are {valid}{hint}")


def rename_keys(data: Mapping, renames: Mapping[str, str], label: str) -> dict:
    """A copy of ``data`` with deprecated keys moved to their new names (one ``FutureWarning`` each).

    Args:
        data: a config mapping (not modified).
        renames: ``{old name: new name}``.
        label: the config's name in messages, e.g. ``"GraphConfig"`` or ``"config section 'data'"``.

    Raises:
        ValueError: when a mapping gives both the old and the new name.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     rename_keys({"block_size": 64}, {"block_size": "context_length"}, "data")
        {'context_length': 64}
    """
    out = dict(data)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{label} gives both {old!r} (deprecated) and {new!r}; keep only {new!r}")
        warnings.warn(f"{label}: {old!r} is deprecated and will be removed in the next release; "
                      f"it is now called {new!r}", FutureWarning, stacklevel=3)
        out[new] = out.pop(old)
    return out
