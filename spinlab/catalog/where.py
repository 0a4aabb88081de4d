"""Conditions on a run's values (``accuracy>0.95``, ``bias_A=6e-3``, ``plan_kind!=bench``) and
times (``--since 2026-12-01``, ``--since 3d``), parsed into what a catalog query needs."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from spinlab.errors import ConfigError

_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.\-/]*)\s*(>=|<=|!=|==|=|>|<)\s*([^<>=!\s].*?)\s*$")
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Condition:
    """``key op value``; a number compares with numbers (``=`` within 1e-9 relative), text with text."""

    key: str
    op: str
    value: float | str

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _CONDITION.match(text)
        if not match:
            raise ConfigError(
                f"--where {text!r} is not a condition; write KEY OP VALUE with OP one of "
                "> >= < <= = != (e.g. 'accuracy>0.95' or 'bias_A=6e-3')"
            )
        key, op, raw = match.groups()
        raw = raw.strip("'\"")
        value: float | str
        try:
            value = float(raw)
        except ValueError:
            value = raw
            if op not in ("=", "==", "!="):
                raise ConfigError(f"--where {text!r}: {op} needs a number, not {raw!r}") from None
        return cls(key, "=" if op == "==" else op, value)


def parse_time(text: str, option: str = "--since") -> _dt.datetime:
    """An ISO date or date-time (local time unless it says otherwise), or an age such as
    ``3d``, ``12h``, ``30m``, ``2w``; returned as naive UTC (what the catalog stores)."""
    ago = _AGO.match(text)
    if ago:
        seconds = float(ago.group(1)) * _UNIT_S[ago.group(2)]
        return _naive_utc(_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=seconds))
    try:
        return _naive_utc(_dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a time; give a date (2026-12-01), a date and time "
            "(2026-12-01T14:30) or an age (3d, 12h, 30m)"
        ) from None


def _naive_utc(value: _dt.datetime) -> _dt.datetime:
    if value.tzinfo is None:
        value = value.astimezone()  # naive means local time
    return value.astimezone(_dt.timezone.utc).replace(tzinfo=None)


def to_utc(value: _dt.datetime | str | None) -> _dt.datetime | None:
    """Naive UTC of an aware time, a naive local time or an ISO string (None for none or junk)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return _naive_utc(value)


__all__ = ["Condition", "parse_time", "to_utc"]
