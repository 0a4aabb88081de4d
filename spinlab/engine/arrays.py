"""The one array codec of the run journal and the monitoring wire: an array travels as its dtype
string, its shape and its raw C-order bytes, never pickled, and only in a dtype of one allow-list.

Both sides decode hostile input (a damaged journal, a message from the network), so decoding
checks the dtype against the list and the byte count against the shape before it builds the array.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

#: the dtypes an array may have: little-endian numbers and bools (``dtype.str``); fixed-width
#: text (``|S<n>``, ``<U<n>``) as well where the caller allows text (the journal does, the wire not)
ARRAY_DTYPES = frozenset(
    {"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"}
)
_TEXT_DTYPE = re.compile(r"^(\|S|<U)[1-9][0-9]{0,8}$")


class ArrayCodecError(ValueError):
    """An array cannot be encoded, or its encoding does not describe a valid array."""


def allowed(dtype: str, *, text: bool = False) -> bool:
    """Whether ``dtype`` (a ``numpy.dtype.str``) is on the allow-list."""
    return dtype in ARRAY_DTYPES or (text and _TEXT_DTYPE.match(dtype) is not None)


def little_endian(arr: np.ndarray) -> np.ndarray:
    """``arr`` in little-endian byte order (the only order on the list)."""
    return arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.byteorder == ">" else arr


def encode_array(value: Any, *, text: bool = False) -> tuple[str, list[int], bytes]:
    """``(dtype, shape, raw bytes)`` of ``value``; :class:`ArrayCodecError` for a dtype off the list."""
    arr = little_endian(np.asarray(value))
    if not allowed(arr.dtype.str, text=text):
        raise ArrayCodecError(f"dtype {arr.dtype} ({arr.dtype.str}) is not allowed")
    return arr.dtype.str, list(arr.shape), np.ascontiguousarray(arr).tobytes()


def decode_array(dtype: Any, shape: Any, raw: Any, *, text: bool = False) -> np.ndarray:
    """The array ``encode_array`` described (a read-only view of ``raw``), after checking that the
    dtype is on the list, the shape is a list of sizes and ``raw`` holds exactly that many bytes."""
    if not isinstance(dtype, str) or not allowed(dtype, text=text):
        raise ArrayCodecError(f"dtype {dtype!r} is not allowed")
    if not isinstance(shape, Sequence) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ArrayCodecError(f"bad shape {shape!r}")
    parsed = np.dtype(dtype)
    size = memoryview(raw).nbytes
    if parsed.itemsize * math.prod(shape) != size:
        raise ArrayCodecError(f"{size} bytes do not match dtype {parsed.str} shape {list(shape)}")
    return np.frombuffer(raw, dtype=parsed).reshape(shape)


__all__ = ["ARRAY_DTYPES", "ArrayCodecError", "allowed", "little_endian", "encode_array", "decode_array"]
