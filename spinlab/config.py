"""Validated configs: pydantic models that refuse unknown keys, NaN and infinity, and report a
bad value as one :class:`~spinlab.errors.ConfigError` line naming the setting.

Every protocol config derives from :class:`Config`; the constrained number types below replace
hand-written positive/finite checks. Cross-field rules go in a ``model_validator`` that raises
``ValueError`` with a message saying what to change.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spinlab.errors import ConfigError

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]

#: integers a run can record: the journal (msgpack) holds -2^63 .. 2^64 - 1
INT_RANGE = (-(2**63), 2**64 - 1)


def _out_of_range_int(value: Any, where: str) -> str | None:
    """The first integer in ``value`` (nested dicts, lists, models) the journal cannot hold."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return where if not INT_RANGE[0] <= value <= INT_RANGE[1] else None
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((bad for key, item in items if (bad := _out_of_range_int(item, key))), None)


def describe(model: type[BaseModel], exc: ValidationError) -> str:
    """One line for all problems: ``Name: key: what is wrong (got value); ...``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            parts.append(f"{where} is not a setting; known settings: {', '.join(model.model_fields)}")
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        got = error.get("input")
        shown = (
            "" if error["type"] in ("value_error", "missing") or isinstance(got, dict) else f" (got {got!r})"
        )
        parts.append(f"{where}: {message}{shown}" if where else message)
    return f"{model.__name__}: " + "; ".join(parts)


class Config(BaseModel):
    """Base of the protocol configs (frozen, strict about keys, finite numbers only)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, arbitrary_types_allowed=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe(type(self), exc)) from None

    @model_validator(mode="after")
    def _recordable_ints(self) -> Config:
        # every config is journalled with the run: an integer msgpack cannot hold fails at the
        # option, not as "cannot journal a int" once the run directory exists
        bad = _out_of_range_int(dict(self), "")
        if bad:
            raise ValueError(f"{bad} is outside {INT_RANGE[0]} .. {INT_RANGE[1]}, the integers a run records")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (what the run file stores and ``spinlab resume`` rebuilds from)."""
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> Config:
        return type(self)(**{**self.model_dump(), **changes})


__all__ = ["Config", "INT_RANGE", "Positive", "NonNegative", "PositiveInt", "NonNegativeInt", "describe"]
