"""``--set field=value``: override any field of a frozen experiment dataclass from the command line.

A reproduction's experiment is one frozen dataclass holding the paper's settings; an override
makes a new one with :func:`dataclasses.replace` (never a copy), so the run record can name
exactly what deviates from the paper (:func:`agegender.records.deviations_from`).

Values are read by the type of the field's current value: ``true``/``false`` for booleans,
integers, floats (``1e-3``), ``none`` for an optional field, tuples as comma-separated items,
text otherwise.
"""

from __future__ import annotations

import dataclasses

from agegender.errors import DataError


def _convert(text: str, current, name: str):
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if isinstance(current, bool):
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{name} takes true or false, not {text!r}")
    if isinstance(current, int):
        value = float(text)
        if not value.is_integer():
            raise ValueError(f"{name} takes a whole number, not {text!r}")
        return int(value)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        items = [t.strip() for t in text.split(",") if t.strip()]
        sample = current[0] if current else ""
        return tuple(_convert(t, sample, name) for t in items)
    if current is None:  # an optional field: the most specific reading
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def apply_overrides(exp, overrides) -> object:
    """``exp`` with each ``field=value`` of ``overrides`` applied; a one-line error names a bad one."""
    fields = {f.name for f in dataclasses.fields(exp)}
    changes = {}
    for item in overrides or ():
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DataError(f"--set {item!r}: expected field=value",
                            fix=f"for example --set {sorted(fields)[0]}=..., fields: {', '.join(sorted(fields))}")
        if name not in fields:
            raise DataError(f"--set {item!r}: {type(exp).__name__} has no field {name!r}",
                            fix=f"choose among {', '.join(sorted(fields))}")
        try:
            changes[name] = _convert(text, getattr(exp, name), name)
        except ValueError as err:
            raise DataError(f"--set {item!r}: {err}", fix="give a value of the field's type") from None
    return dataclasses.replace(exp, **changes) if changes else exp
