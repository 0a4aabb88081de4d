"""Where each sample goes: a batch of drives laid out on AWG records, and scope samples put back
on the drive's time grid.

Pure functions over arrays (no instrument is touched), so the geometry of a bench call can be
tested and reasoned about apart from the instruments that play it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinlab.errors import ConfigError, InstrumentError

#: Shortest record the AWG accepts; shorter records are padded with zeros (ignored).
MIN_RECORD_SAMPLES = 32


@dataclass(frozen=True)
class Record:
    """One AWG record: ``samples`` are played; samples ``[keep, keep + length)`` of the response
    are the timeline samples ``[start, start + length)``. The first ``keep`` samples replay the
    timeline before ``start`` so the device's state is continuous across a split."""

    samples: np.ndarray
    start: int
    keep: int
    length: int


@dataclass(frozen=True)
class RecordLayout:
    """How a batch of equal-length drives is laid out on one timeline of AWG records.

    The timeline is ``[settle zeros, drive 0, settle zeros, drive 1, ...]``; ``records`` tile it.
    """

    records: tuple[Record, ...]
    batch: int
    n: int
    settle: int

    @property
    def timeline_length(self) -> int:
        return self.batch * (self.settle + self.n)

    def unpack(self, timeline_response: np.ndarray) -> np.ndarray:
        """Timeline response -> ``(batch, n)`` responses of the drives."""
        item = self.settle + self.n
        return timeline_response.reshape(self.batch, item)[:, self.settle :]


def plan_records(drives: np.ndarray, *, settle: int, overlap: int, max_record: int) -> RecordLayout:
    """Pack ``drives`` (batch, n) into AWG records of at most ``max_record`` samples.

    Whole drives (each preceded by ``settle`` zeros) are packed greedily; a record ends at a drive
    boundary whenever the next drive does not fit. A drive longer than a record is split, and
    every continuation record starts by replaying ``overlap`` timeline samples that are discarded.
    """
    drives = np.atleast_2d(np.asarray(drives, dtype=np.float64))
    batch, n = drives.shape
    if settle < 0 or overlap < 0:
        raise ValueError("settle and overlap must be >= 0")
    if overlap >= max_record:
        raise ConfigError(
            f"segment overlap ({overlap} samples) must be shorter than the AWG record "
            f"({max_record} samples); lower [segmentation] overlap_s or use a coarser drive dt"
        )
    item = settle + n
    timeline = np.zeros((batch, item))
    timeline[:, settle:] = drives
    timeline = timeline.reshape(-1)
    total = timeline.size
    records = []
    start = 0
    while start < total:
        pre = 0 if start % item == 0 else min(overlap, start)
        end = min(start + max_record - pre, total)
        if end < total:
            boundary = (end // item) * item
            if boundary > start:
                end = boundary
        samples = timeline[start - pre : end]
        if samples.size < MIN_RECORD_SAMPLES:
            samples = np.concatenate([samples, np.zeros(MIN_RECORD_SAMPLES - samples.size)])
        records.append(Record(samples=samples, start=start, keep=pre, length=end - start))
        start = end
    return RecordLayout(records=tuple(records), batch=batch, n=n, settle=settle)


def average_onto_grid(
    values: np.ndarray, t0_s: float, dt_scope_s: float, delay_s: float, dt_s: float, n: int
) -> np.ndarray:
    """Mean of the scope samples inside each drive sample interval.

    Scope sample ``k`` is at ``t0_s + k dt_scope_s`` after the trigger; drive sample ``j`` reaches
    the scope during ``[delay_s + j dt_s, delay_s + (j + 1) dt_s)``. Averaging (rather than
    picking one sample) uses every acquired sample, which beats the scope's noise and
    quantisation down by sqrt(samples per interval).
    """
    ratio = dt_s / dt_scope_s
    skip = (delay_s - t0_s) / dt_scope_s
    k, first = int(round(ratio)), int(round(skip))
    if (
        abs(ratio - k) < 1e-6
        and abs(skip - first) < 1e-6
        and k >= 1
        and first >= 0
        and first + n * k <= values.size
    ):
        # the common case: whole scope points per drive sample, aligned -> a reshape
        return values[first : first + n * k].reshape(n, k).mean(axis=1)
    t = t0_s + dt_scope_s * np.arange(values.size)
    # a small tolerance so a scope sample that lands on an interval edge goes to the later one
    index = np.floor((t - delay_s) / dt_s + 1e-6).astype(np.int64)
    inside = (index >= 0) & (index < n)
    counts = np.bincount(index[inside], minlength=n)
    if counts.size > n or np.any(counts[:n] == 0):
        missing = int(np.sum(counts[:n] == 0))
        raise InstrumentError(
            f"the scope record does not cover {missing} of {n} drive samples (record starts "
            f"{t0_s:.4g} s after the trigger, {values.size} points at {dt_scope_s:.4g} s, delay "
            f"{delay_s:.4g} s); check the scope sample rate and [calibration] delay_s"
        )
    sums = np.bincount(index[inside], weights=values[inside], minlength=n)
    return sums / counts


__all__ = ["MIN_RECORD_SAMPLES", "Record", "RecordLayout", "average_onto_grid", "plan_records"]
