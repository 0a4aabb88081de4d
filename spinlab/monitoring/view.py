"""What ``spinlab monitor`` shows: a state folded from messages, rendered with rich or as JSON.

:class:`MonitorState` is plain data (testable without a terminal); :func:`render` turns it into
a rich renderable; :func:`message_to_json` is the ``--json`` line format:

    {"topic", "run", "seq", "t", "replay", "payload", "arrays": {name: {"dtype", "shape", ...}}}

Arrays with at most ``max_array`` elements carry their values in ``"data"`` (nested lists;
complex values as ``[re, im]`` pairs; NaN/inf as null). Larger arrays are summarised as
``{"summarised": true, "min", "max", "mean"}``, so one line stays small whatever is published;
use ``--record`` to keep full arrays.

The view is robust to every message :func:`~spinlab.monitoring.messages.decode` accepts:
text from the stream is escaped before rich sees it (a ``[/]`` in a payload is text, not
markup), empty and complex arrays are shown, not assumed away, and the per-name tables are
bounded so a publisher inventing names cannot grow the watcher without limit.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinlab.monitoring.messages import Message

_BLOCKS = "▁▂▃▄▅▆▇█"
#: Most entries kept per table of the view (waveforms, instruments, results).
MAX_ENTRIES = 64


def sparkline(values: Any, width: int = 60) -> str:
    """Unicode block sparkline of ``values`` squeezed (bin means) into ``width`` characters."""
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ""
    if v.size > width:
        edges = np.linspace(0, v.size, width + 1).astype(int)
        v = np.array([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-300:
        return _BLOCKS[0] * v.size
    with np.errstate(all="ignore"):  # spans beyond the float range (|x| ~ 1e308) scale to inf
        level = np.nan_to_num((v / 2 - lo / 2) / (hi / 2 - lo / 2), nan=0.0, posinf=1.0)
    idx = np.clip((level * (len(_BLOCKS) - 1)).round().astype(int), 0, len(_BLOCKS) - 1)
    return "".join(_BLOCKS[i] for i in idx)


@dataclass
class MonitorState:
    """Everything the live view shows, updated one message at a time."""

    run_id: str = ""
    kind: str = ""
    status: str = "waiting"
    config: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)
    waveforms: dict = field(default_factory=dict)  # name -> (samples 1-D, payload)
    loss: collections.deque = field(default_factory=lambda: collections.deque(maxlen=500))
    nrmse: collections.deque = field(default_factory=lambda: collections.deque(maxlen=500))
    results: dict = field(default_factory=dict)
    instruments: dict = field(default_factory=dict)
    errors: collections.deque = field(default_factory=lambda: collections.deque(maxlen=5))
    logs: collections.deque = field(default_factory=lambda: collections.deque(maxlen=6))
    publisher_stats: dict = field(default_factory=dict)
    messages: int = 0
    last_message_s: float = 0.0

    def update(self, msg: Message) -> None:
        self.messages += 1
        self.last_message_s = time.monotonic()
        p = msg.payload
        if msg.run_id != self.run_id:  # a new run on the same address: start afresh
            self._new_run(msg.run_id)
        if msg.topic in ("opening", "start"):
            self.kind = str(p.get("plan", p.get("kind", "")))
            self.config = p.get("config") if isinstance(p.get("config"), dict) else {}
            self.status = "opening" if msg.topic == "opening" else "running"
        elif msg.topic == "stop":
            self.status = str(p.get("status", "stopped"))
            if isinstance(p.get("results"), dict):
                for key, value in p["results"].items():
                    _put(self.results, key, value)
            if "monitor_dropped" in p:
                self.publisher_stats["dropped"] = p["monitor_dropped"]
            if p.get("error"):
                self.errors.append(f"{p['error']}: {p.get('reason', '')}")
        elif msg.topic in ("progress", "sweep.progress"):
            self.progress = dict(p)
        elif msg.topic in ("sweep.start", "sweep.point", "sweep.stop"):
            self._sweep(msg.topic, p)
        elif msg.topic == "preview" and "samples" in msg.arrays:
            _put(self.waveforms, str(p.get("name", "preview")), (_trace(msg.arrays["samples"]), p))
        elif msg.topic == "twin.loss" and _number(p.get("loss")) is not None:
            self.loss.append(_number(p["loss"]))
        elif msg.topic == "twin.nrmse" and _number(p.get("nrmse")) is not None:
            self.nrmse.append(_number(p["nrmse"]))
        elif msg.topic == "result" and isinstance(p.get("values"), dict):
            for key, value in p["values"].items():
                _put(self.results, key, value)
        elif msg.topic == "instrument.status":
            _put(self.instruments, str(p.get("name", "?")), p)
        elif msg.topic == "error":
            self.errors.append(f"{p.get('type', 'error')}: {p.get('message', '')}")
        elif msg.topic == "log":
            self.logs.append(f"{p.get('level', '')} {p.get('logger', '')}: {p.get('message', '')}")
        elif msg.topic == "monitor.stats":
            for key, value in p.items():
                _put(self.publisher_stats, key, value)
        elif msg.topic == "control" and p.get("state"):
            self.status = str(p["state"])
        elif msg.arrays:  # a protocol's own topic (e.g. acquire.batch): show its arrays
            for name, arr in msg.arrays.items():
                if arr.ndim >= 1:
                    _put(self.waveforms, f"{msg.topic}:{name}", (_trace(arr), p))

    def _sweep(self, topic: str, p: dict) -> None:
        """A sweep (``spinlab sweep --monitor``): its mode, progress, last point and failures."""
        if topic == "sweep.start":
            self.kind = f"sweep of {_fmt(p.get('plan', ''))} on {_fmt(p.get('device', ''))}; {_fmt(p.get('mode', ''), 160)}"
            self.status = "running"
        elif topic == "sweep.stop":
            self.status = str(p.get("status", "stopped"))
            for key, value in p.items():
                if isinstance(value, int):
                    _put(self.results, key, value)
        elif p.get("status") == "failed":
            self.errors.append(f"point {p.get('index')} failed: {p.get('error', '')}")
        elif p.get("status") != "running":
            values = p.get("values") if isinstance(p.get("values"), dict) else {}
            text = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            _put(
                self.results,
                "last point",
                f"{p.get('index')} ({text}, seed {p.get('seed')}): {p.get('status')}",
            )

    def _new_run(self, run_id: str) -> None:
        fresh = MonitorState(run_id=run_id)
        self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k not in ("messages",)})


def _put(table: dict, key: str, value: Any) -> None:
    """``table[key] = value``; a new key beyond MAX_ENTRIES pushes the oldest out."""
    if key not in table and len(table) >= MAX_ENTRIES:
        del table[next(iter(table))]
    table[key] = value


def _trace(arr: np.ndarray) -> np.ndarray:
    """What a sparkline shows of an array: its first row, as real floats (|z| for complex)."""
    arr = np.asarray(arr)
    if arr.ndim > 1:
        arr = arr.reshape(-1, arr.shape[-1])[0] if arr.size else arr.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):  # |inf+nan j| and the like: not finite, not shown
        return (np.abs(arr) if arr.dtype.kind == "c" else arr).astype(float).reshape(-1)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def render(state: MonitorState, *, missed: int = 0, rejected: int = 0, width: int = 60):
    """The rich renderable of the live view."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_row(
        "[bold]run[/]",
        _text(state.run_id) or "(waiting for a run)",
        "[bold]status[/]",
        _status_markup(state.status),
    )
    if state.kind:
        head.add_row("[bold]kind[/]", _text(state.kind), "", "")
    parts: list = [head]

    done, total = state.progress.get("done"), state.progress.get("total")
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        extra = _text(
            "  ".join(f"{k}={_fmt(v)}" for k, v in state.progress.items() if k not in ("done", "total")), 120
        )
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=total, completed=min(done, total), width=width), f"{done}/{total}", extra
        )
        parts.append(bar)

    if state.waveforms or state.loss or state.nrmse:
        curves = Table.grid(padding=(0, 1))
        for name, (samples, payload) in list(state.waveforms.items())[-4:]:
            curves.add_row(
                f"[cyan]{_text(name)}[/]",
                sparkline(samples, width),
                f"{_range(samples)} {_text(payload.get('unit', ''))}",
            )
        if state.loss:
            curves.add_row("[magenta]loss[/]", sparkline(state.loss, width), _fmt(state.loss[-1]))
        if state.nrmse:
            curves.add_row("[magenta]nrmse[/]", sparkline(state.nrmse, width), _fmt(state.nrmse[-1]))
        parts.append(curves)

    if state.results or state.instruments:
        table = Table(show_header=False, box=None, padding=(0, 1))
        for key, value in list(state.results.items())[:12]:
            table.add_row(f"[green]{_text(key)}[/]", _text(value))
        for name, status in list(state.instruments.items())[-8:]:
            fields = "  ".join(f"{k}={_fmt(v)}" for k, v in status.items() if k != "name")
            table.add_row(f"[blue]{_text(name)}[/]", _text(fields, 120))
        parts.append(table)

    for line in state.errors:
        parts.append(f"[red]{_text(line, 200)}[/]")
    for line in state.logs:
        parts.append(f"[dim]{_text(line, 200)}[/]")
    dropped = _text(state.publisher_stats.get("dropped", 0))
    parts.append(
        f"[dim]messages {state.messages}  publisher dropped {dropped}  "
        f"missed here {missed}  rejected {rejected}[/]"
    )
    return Panel(Group(*parts), title="spinlab monitor", border_style="blue")


def _status_markup(status: str) -> str:
    colour = {
        "running": "green",
        "completed": "green",
        "paused": "yellow",
        "pausing": "yellow",
        "aborting": "yellow",
        "aborted": "yellow",
        "failed": "red",
    }.get(status, "white")
    return f"[{colour}]{_text(status)}[/]"


def _text(value: Any, limit: int = 60) -> str:
    """A value from the stream as literal text for rich markup (a ``[/]`` in it is no tag)."""
    from rich.markup import escape

    return escape(_fmt(value, limit))


def _fmt(value: Any, limit: int = 60) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _range(samples: np.ndarray) -> str:
    finite = samples[np.isfinite(samples)]
    return f"{_fmt(float(finite.min()))}..{_fmt(float(finite.max()))}" if finite.size else "(no samples)"


def message_to_json(msg: Message, max_array: int = 4096) -> dict[str, Any]:
    """The ``--json`` representation of one message (see module docstring)."""
    arrays = {}
    for name, arr in msg.arrays.items():
        entry: dict[str, Any] = {"dtype": arr.dtype.str, "shape": list(arr.shape)}
        if math.prod(max(s, 1) for s in arr.shape) <= max_array:  # empty axes still cost a list each
            entry["data"] = _jsonable_array(arr)
        else:
            finite = arr[np.isfinite(arr)] if arr.dtype.kind in "fc" else arr
            stats = np.abs(finite) if arr.dtype.kind == "c" else finite
            entry.update(
                {
                    "summarised": True,
                    "min": _clean(stats.min()) if stats.size else None,
                    "max": _clean(stats.max()) if stats.size else None,
                    "mean": _clean(stats.astype(float).mean()) if stats.size else None,
                }
            )
        arrays[name] = entry
    return {
        "topic": msg.topic,
        "run": msg.run_id,
        "seq": msg.seq,
        "t": msg.time_s,
        "replay": msg.replay,
        "payload": _clean_tree(msg.payload),
        "arrays": arrays,
    }


def _jsonable_array(arr: np.ndarray) -> Any:
    if arr.dtype.kind == "c":
        arr = np.stack([arr.real, arr.imag], axis=-1)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        return _clean_tree(arr.astype(object).tolist())
    return arr.tolist()


def _clean(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_tree(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return _clean(value)
