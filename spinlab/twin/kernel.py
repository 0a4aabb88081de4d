"""The compiled CPU integrator: a fused RK4 rollout of the twin, forward and backward.

``rk4_kernel.cpp`` integrates a whole batch in one call, every stage of every step in registers
and L1 (see its header for why and how). It is built on first use with the system C++ compiler
(``$CXX``, else ``c++``/``g++``/``clang++``) for this CPU and cached under
``$SPINLAB_CACHE/kernels`` (or ``~/.cache/spinlab/kernels``), keyed by the source, the compiler
and the CPU, so a change of any of them rebuilds it. Without a compiler the twin falls back to the
torch integrator (same results, several times slower); ``SPINLAB_TWIN_KERNEL=torch`` forces that.

:func:`simulate` runs a batch straight from the physical drive to the physical response (what a
Device needs: no feature arrays, the drive read in place). :func:`rollout` takes the model's
normalised drive features (training windows) and is differentiable with respect to the weights
and the initial state: its backward pass runs the adjoint recursion in the kernel and forms the
weight gradients as a few large GEMMs over the stored activations.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger("spinlab.twin")

SOURCE = Path(__file__).with_name("rk4_kernel.cpp")
LANES = 16  # rows per SIMD vector in the kernel: batches are padded to a multiple
SHARD_ROWS = 48  # rows per kernel tile: parallel shards split on these boundaries
MAX_FEATURES = 16  # most state components / drive features the kernel takes
ABI = 2
_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno"]


def cache_dir() -> Path:
    """``$SPINLAB_CACHE/kernels``, else ``$XDG_CACHE_HOME/spinlab/kernels`` or ``~/.cache/...``."""
    if os.environ.get("SPINLAB_CACHE"):
        return Path(os.environ["SPINLAB_CACHE"]).expanduser() / "kernels"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spinlab" / "kernels"


def _compiler() -> list[str] | None:
    for candidate in (os.environ.get("CXX"), sysconfig.get_config_var("CXX")):
        if candidate:
            argv = shlex.split(candidate)
            if argv and shutil.which(argv[0]):
                return argv
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return [name]
    return None


def _cpu_signature() -> str:
    """What the build depends on: -march=native code runs only on CPUs with these features."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags.strip()}"


def _build(cxx: list[str], flags: list[str], target: Path) -> None:
    """Compile atomically (tmp + rename), tuned for this CPU if the compiler can."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    errors = []
    for tuning in (["-march=native"], ["-mcpu=native"], []):
        cmd = [*cxx, *flags, *tuning, str(SOURCE), "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, target)
            return
        errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()[-500:]}")
    raise RuntimeError("; ".join(errors))


@lru_cache(maxsize=None)
def library(skip: int = 0) -> ctypes.CDLL | None:
    """The compiled kernel (built and cached on first use), or None where it cannot be had.

    ``skip`` (benchmarks only) builds a variant that drops parts of the work (``TWIN_SKIP`` in
    rk4_kernel.cpp) to measure what they cost; its results are wrong by design."""
    if skip == 0 and os.environ.get("SPINLAB_TWIN_KERNEL", "").lower() == "torch":
        return None
    cxx = _compiler()
    if cxx is None:
        log.warning("twin: no C++ compiler found (set CXX); using the slower torch integrator")
        return None
    try:
        flags = [*_FLAGS, f"-DTWIN_SKIP={int(skip)}"] if skip else _FLAGS
        version = subprocess.run([*cxx, "--version"], capture_output=True, text=True).stdout
        key = hashlib.sha256(
            b"\0".join(
                s.encode()
                for s in (SOURCE.read_text(), " ".join(cxx), version, " ".join(flags), _cpu_signature())
            )
        ).hexdigest()[:16]
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"rk4_kernel-{key}.so"
        if not target.is_file():
            from filelock import FileLock

            with FileLock(str(target) + ".lock"):
                if not target.is_file():
                    _build(cxx, flags, target)
        lib = ctypes.CDLL(str(target))
        if lib.twin_kernel_abi() != ABI:
            raise RuntimeError(f"{target} has kernel ABI {lib.twin_kernel_abi()}, expected {ABI}")
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning(
            "twin: the compiled integrator is unavailable (%s); using the slower torch integrator",
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None
    p, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.twin_forward.argtypes = [i32] * 4 + [p] * 6 + [i64] * 4 + [i32, i32, i32] + [p] * 6
    lib.twin_forward.restype = i32
    lib.twin_backward.argtypes = [i32] * 4 + [p] * 3 + [i64] * 4 + [p] * 5
    lib.twin_backward.restype = i32
    lib.twin_simulate.argtypes = (
        [i32] * 4 + [p] * 6 + [i64] * 6 + [i32, i32, p, i32, p] + [ctypes.c_float] * 4 + [p] * 3
    )
    lib.twin_simulate.restype = i32
    return lib


def supports(x0: Tensor, u_feat: Tensor, c: Tensor, params: Sequence[Tensor]) -> bool:
    """Whether the kernel can integrate these inputs (CPU float32, gradients only for weights
    and the initial state, sizes in range) and is built."""
    tensors = (x0, u_feat, c, *params)
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not (u_feat.requires_grad or c.requires_grad)
        and x0.shape[-1] <= MAX_FEATURES
        and u_feat.shape[-1] <= MAX_FEATURES
        and library() is not None
    )


def supports_model(params: Sequence[Tensor], n_delays: int) -> bool:
    """Whether :func:`simulate` can run a model with these weights (CPU float32, built)."""
    return (
        all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
        and n_delays <= MAX_FEATURES
        and library() is not None
    )


def _lanes(t: Tensor, rows: int) -> Tensor:
    """``(B, ...)`` -> ``(..., rows)`` contiguous, rows beyond B copies of row 0 (finite, and
    their gradients are zero). Free when ``t`` is a view of such storage already."""
    t = t.movedim(0, -1)
    if rows == t.shape[-1]:
        return t.contiguous()
    out = t.new_empty(*t.shape[:-1], rows)
    out[..., : t.shape[-1]] = t
    out[..., t.shape[-1] :] = t[..., :1]
    return out


def _shards(rows: int, workers: int) -> list[tuple[int, int]]:
    tiles = -(-rows // SHARD_ROWS)
    workers = max(1, min(workers, tiles))
    bounds = [min(rows, round(k * tiles / workers) * SHARD_ROWS) for k in range(workers + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _run(fn, shards: list[tuple[int, int]], lead: tuple, tail: tuple) -> None:
    """Call a kernel entry point ``fn(*lead, r0, r1, *tail)`` on each row range, in parallel
    threads (ctypes releases the GIL). Tensors are passed as data pointers; holding them in
    ``lead``/``tail`` keeps them alive for the call."""

    def ptr(a):
        return a.data_ptr() if isinstance(a, Tensor) else a

    head, rest = [ptr(a) for a in lead], [ptr(a) for a in tail]

    def one(bounds: tuple[int, int]) -> None:
        if fn(*head, *bounds, *rest) != 0:
            raise ValueError("twin kernel rejected its arguments (sizes out of range)")

    if len(shards) == 1:
        one(shards[0])
        return
    with ThreadPoolExecutor(len(shards), thread_name_prefix="twin") as pool:
        list(pool.map(one, shards))


@dataclass
class _Net:
    """The MLP's weights in the kernel's layouts (see rk4_kernel.cpp)."""

    k: int
    d: int
    h: int
    layers: int
    w_cond: Tensor  # (H, C): conditions enter the first layer's bias
    b0: Tensor
    ws: Tensor  # (H, K)
    wd: Tensor  # (H, D)
    wh: Tensor  # (L-1, H_in, H_out)
    bh: Tensor  # (L-1, H)
    wo: Tensor  # (H, K)
    bo: Tensor

    @classmethod
    def of(cls, params: Sequence[Tensor], k: int, d: int) -> _Net:
        w0, b0, hidden, wo, bo = params[0], params[1], params[2:-2], params[-2], params[-1]
        stack = (lambda ts: torch.stack(list(ts)).contiguous()) if hidden else (lambda ts: bo.new_zeros(0))
        return cls(
            k,
            d,
            w0.shape[0],
            1 + len(hidden) // 2,
            w0[:, k + d :],
            b0,
            w0[:, :k].contiguous(),
            w0[:, k : k + d].contiguous(),
            stack(w.T for w in hidden[0::2]),
            stack(hidden[1::2]),
            wo.T.contiguous(),
            bo,
        )

    def hidden_transposed(self) -> Tensor:
        """(L-1, H_out, H_in): the backward pass reads the hidden weights the other way round."""
        return self.wh.transpose(1, 2).contiguous() if self.layers > 1 else self.wh

    def lead(self, rows: int) -> tuple:
        return (
            self.k,
            self.d,
            self.h,
            self.layers,
            self.ws,
            self.wd,
            self.wh,
            self.bh,
            self.wo,
            self.bo,
            rows,
        )


def _forward(
    net: _Net,
    x0: Tensor,
    u_feat: Tensor,
    c: Tensor,
    hold: bool,
    held_from: int,
    n_states: int,
    workers: int,
    store: bool,
    lib: ctypes.CDLL | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Kernel forward: states ``(steps, n_states, rows)``, and with ``store`` every stage's
    activations and inputs for the backward pass."""
    batch, n, _ = u_feat.shape
    steps, rows = n - 1, -(-batch // LANES) * LANES
    base = net.b0 if c.shape[1] == 0 else torch.addmm(net.b0, c, net.w_cond.T)
    base = _lanes(base.expand(batch, net.h), rows)
    x0p, up = _lanes(x0, rows), _lanes(u_feat, rows)
    out = x0.new_empty(steps, n_states, rows)
    act = x0.new_empty(net.layers, net.h, 4 * steps, rows) if store else None
    inp = x0.new_empty(net.k + net.d, 4 * steps, rows) if store else None
    if steps:
        _run(
            (lib or library()).twin_forward,
            _shards(rows, workers),
            net.lead(rows),
            (steps, int(hold), n_states, int(held_from), x0p, up, base, out, act, inp),
        )
    return out, act, inp


class _Rollout(torch.autograd.Function):
    """Kernel rollout as an autograd function of (x0, weights)."""

    @staticmethod
    def forward(
        ctx, hold: bool, held_from: int, x0: Tensor, u_feat: Tensor, c: Tensor, *params: Tensor
    ) -> Tensor:
        batch, _, d = u_feat.shape
        net = _Net.of(params, x0.shape[1], d)
        out, act, inp = _forward(net, x0, u_feat, c, hold, held_from, x0.shape[1], 1, store=True)
        ctx.save_for_backward(act, inp, _lanes(c, out.shape[-1]))
        ctx.net, ctx.batch = net, batch
        return out[..., :batch].permute(2, 0, 1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        act, inp, cp = ctx.saved_tensors
        net, batch = ctx.net, ctx.batch
        k, h, layers = net.k, net.h, net.layers
        steps, rows = act.shape[2] // 4, act.shape[3]
        g = grad_out.new_empty(steps, k, rows)
        g[..., :batch] = grad_out.permute(1, 2, 0)
        g[..., batch:] = 0.0
        dz = g.new_empty(layers, h, 4 * steps, rows)
        dk = g.new_empty(k, 4 * steps, rows)
        dx0 = g.new_zeros(k, rows)
        if steps:
            _run(
                library().twin_backward,
                [(0, rows)],
                (k, net.d, h, layers, net.ws, net.hidden_transposed(), net.wo, rows),
                (steps, g, act, dz, dk, dx0),
            )
        # weight gradients: sums over every stage of every step and row, as GEMMs
        dz_f, act_f, dk_f = dz.flatten(2), act.flatten(2), dk.flatten(1)
        grads = [torch.cat([dz_f[0] @ inp.flatten(1).T, dz[0].sum(dim=1) @ cp.T], dim=1), dz_f[0].sum(dim=1)]
        for layer in range(1, layers):
            grads += [dz_f[layer] @ act_f[layer - 1].T, dz_f[layer].sum(dim=1)]
        grads += [dk_f @ act_f[-1].T, dk_f.sum(dim=1)]
        return (None, None, dx0[:, :batch].T, None, None, *grads)


def rollout(
    x0: Tensor,
    u_feat: Tensor,
    c: Tensor,
    params: Sequence[Tensor],
    *,
    hold: bool,
    held_from: int | None = None,
    n_states: int | None = None,
    workers: int = 1,
    lib: ctypes.CDLL | None = None,
) -> Tensor:
    """States after every step ``(B, n-1, n_states)`` from ``x0 (B, K)``, drive features
    ``u_feat (B, n, D)`` and conditions ``c (B, C)`` (normalised units), with ``params`` the
    MLP's weights and biases in order (first layer columns: state, drive features, conditions).
    Features from ``held_from`` on are held over each step (time-varying conditions).
    Differentiable in ``x0`` and ``params`` (then single-threaded, all states); without
    gradients ``workers`` threads share the batch. ``lib``: a :func:`library` variant
    (benchmarks)."""
    held_from = u_feat.shape[2] if held_from is None else int(held_from)
    if torch.is_grad_enabled() and (x0.requires_grad or any(p.requires_grad for p in params)):
        return _Rollout.apply(bool(hold), held_from, x0, u_feat, c, *params)
    with torch.no_grad():
        net = _Net.of(params, x0.shape[1], u_feat.shape[2])
        n_states = x0.shape[1] if n_states is None else n_states
        out, _, _ = _forward(net, x0, u_feat, c, hold, held_from, n_states, workers, store=False, lib=lib)
    return out[..., : x0.shape[0]].permute(2, 0, 1)


def simulate(
    drive: Tensor,
    x0: Tensor,
    c: Tensor,
    params: Sequence[Tensor],
    *,
    hold: bool,
    delay_samples: int,
    settle: int,
    rest: Tensor,
    u_norm: tuple[float, float],
    y_norm: tuple[float, float],
    workers: int = 1,
    lib: ctypes.CDLL | None = None,
) -> Tensor:
    """Free-running response ``(B, n)`` (float32, physical units) straight from the physical
    drive ``(B, n)`` (float32 or float64, read in place): the kernel normalises it, prepends
    ``settle`` samples at each row's ``rest`` level, takes the delayed copies and writes the
    first state component back in physical units, so no array of the drive's size is made
    besides the response. ``x0 (B, K)`` and ``c (B, C)`` are normalised; ``u_norm`` and
    ``y_norm`` are (mean, std) of drive and output; ``lib``: a :func:`library` variant."""
    batch, n = drive.shape
    k = x0.shape[1]
    drive = drive if drive.dtype in (torch.float32, torch.float64) else drive.double()
    drive = drive.contiguous()
    net = _Net.of(params, k, k)
    rows = -(-batch // LANES) * LANES
    base = net.b0 if c.shape[1] == 0 else torch.addmm(net.b0, c, net.w_cond.T)
    base = _lanes(base.expand(batch, net.h), rows)
    x0p = _lanes(x0, rows)
    rest = rest.to(torch.float32).expand(batch).contiguous()
    out = torch.empty(batch, n, dtype=torch.float32)
    _run(
        (lib or library()).twin_simulate,
        _shards(rows, workers),
        net.lead(rows),
        (
            batch,
            n,
            int(settle),
            int(hold),
            int(delay_samples),
            drive,
            int(drive.dtype == torch.float64),
            rest,
            *map(float, (*u_norm, *y_norm)),
            x0p,
            base,
            out,
        ),
    )
    return out


__all__ = ["library", "supports", "supports_model", "rollout", "simulate", "cache_dir", "LANES"]
