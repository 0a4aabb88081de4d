"""The Spin-Neural ODE (Chen et al., Nat. Commun. 13, 1016 (2022)).

The device's hidden state is replaced by k time-delayed copies of its one measured output,
``x(t) = [y(t), y(t - tau), ..., y(t - (k-1) tau)]``, and its dynamics by a small MLP
``dx/dt = f(x, u_1(t), u_1(t - tau), ..., u_2(t), ..., conditions)``: any number of fast
drives, each at the k delays and interpolated between samples, and any number of slow
conditions (an operating point, or an "internal parameter" such as the DMI constant), each at
its present value and held over a step. Integration is fixed-step RK4 on the
sample grid (time measured in samples, so one step is h = 1) with the drive interpolated
between samples.

Three integrators compute the same thing (:meth:`SpinNODE.rollout` picks one):

* the compiled CPU kernel (:mod:`spinlab.twin.kernel`, float32): the whole batch in one fused
  call, forward and backward; what simulation and training use on a CPU;
* the torch loop (TorchScript; any device and dtype: the GPU path). The drive and conditions
  enter the first layer linearly, so their contribution to its pre-activation is computed for a
  whole time chunk at once, and a stage between samples is a blend of two of those rows;
* :meth:`SpinNODE.reference_rollout` - ``torchdiffeq.odeint(method="rk4")`` on the same right
  hand side, kept as the reference the others are tested against. torchdiffeq's ``rk4`` is
  the 3/8 rule, so the fast paths use the 3/8 rule too.

Values are normalised inside the model (output, drive and condition mean/std are buffers stored
with the weights), so callers always pass physical units.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from spinlab.config import Config
from spinlab.errors import ConfigError

INTERPOLATIONS = ("linear", "hold")
StrictPositiveInt = Annotated[int, Field(ge=1, strict=True)]


class TwinArchitecture(Config):
    """Everything that fixes the shape and meaning of a twin's weights.

    ``n_delays`` (k) delayed copies of the output spaced ``delay_samples`` apart form the state;
    each drive in ``drive_names`` enters at the same delays. ``interpolation`` is how the drive is
    evaluated between samples: ``"linear"`` (smooth inputs such as the MuMax3 anisotropy) or
    ``"hold"`` (an AWG holds each sample, so the device sees a staircase; as for every spinlab
    Device, response sample k is taken at the end of drive sample k's hold, so the step from
    sample n to n+1 sees drive sample n+1). ``condition_names`` are the operating conditions
    (``bias_A``, ``field_T``, any named parameter) that enter as extra inputs.

    The sizes are strict integers: a checkpoint saying ``hidden = 4.0`` or ``"12"`` is not one
    spinlab wrote.
    """

    n_delays: StrictPositiveInt = Field(2, description="Delayed copies of the output that form the state")
    delay_samples: StrictPositiveInt = Field(1, description="Samples between two delayed copies")
    hidden: StrictPositiveInt = Field(64, description="Units of each hidden layer")
    n_hidden_layers: StrictPositiveInt = Field(2, description="Hidden layers of the network")
    condition_names: tuple[str, ...] = Field(
        (), description="Operating conditions that enter as inputs (e.g. bias_A, field_T)"
    )
    interpolation: Literal["linear", "hold"] = Field(
        "linear", description="The drive between samples: linear (smooth inputs) or hold (an AWG's staircase)"
    )
    drive_names: tuple[str, ...] = Field(
        ("drive",), min_length=1, description="The fast inputs, each at the twin's delays"
    )

    @model_validator(mode="after")
    def _distinct_inputs(self) -> TwinArchitecture:
        names = self.drive_names + self.condition_names
        if len(set(names)) != len(names):
            raise ValueError(
                f"duplicate input names in drives {self.drive_names} and conditions {self.condition_names}"
            )
        return self

    @property
    def history_samples(self) -> int:
        """Samples of past output needed to form the first state: (k-1) * delay + 1."""
        return (self.n_delays - 1) * self.delay_samples + 1

    @property
    def n_drive_features(self) -> int:
        """Drive features: k delayed copies of every drive."""
        return self.n_delays * len(self.drive_names)

    @property
    def n_inputs(self) -> int:
        return self.n_delays + self.n_drive_features + len(self.condition_names)

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer, for honest FLOP counts."""
        shapes = [(self.n_inputs, self.hidden)]
        shapes += [(self.hidden, self.hidden)] * (self.n_hidden_layers - 1)
        shapes.append((self.hidden, self.n_delays))
        return shapes

    def flops_per_rk4_step(self) -> int:
        """Multiply-adds x 2 of the MLP, 4 right-hand-side evaluations per RK4 step."""
        return 4 * 2 * sum(i * o for i, o in self.layer_shapes())


@dataclass
class Normalisation:
    """Mean/std of output, drive(s) and each condition (physical units), fitted on training data.
    ``u_mean``/``u_std``: a number for a one-drive twin, else one per drive."""

    y_mean: float = 0.0
    y_std: float = 1.0
    u_mean: float | list[float] = 0.0
    u_std: float | list[float] = 1.0
    c_mean: list[float] = field(default_factory=list)
    c_std: list[float] = field(default_factory=list)


# --- the torch integrator (GPU, float64, and CPUs without a C++ compiler) -------------------
def _script(fn):
    """TorchScript the hot loop (1.2-2.4x faster on CPU); plain Python if scripting is gone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(fn)
    except Exception:  # pragma: no cover - depends on the torch build
        return fn


@_script
def _mlp_tail(a: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """The MLP after the first pre-activation ``a``: tanh, then ``addmm`` + tanh per hidden
    layer, then the output layer."""
    h = torch.tanh(a)
    n = len(weights)
    for i in range(n - 1):
        h = torch.tanh(torch.addmm(biases[i], h, weights[i]))
    return torch.addmm(biases[n - 1], h, weights[n - 1])


@_script
def _rk38_loop(
    x: Tensor,
    p0: list[Tensor],
    p1: list[Tensor],
    p2: list[Tensor],
    p3: list[Tensor],
    w_state: Tensor,
    weights: list[Tensor],
    biases: list[Tensor],
) -> list[Tensor]:
    """3/8-rule RK4 over a chunk of steps (h = 1). ``p*[n]`` are the first-layer
    pre-activations contributed by drive + conditions at the four stage times of step n."""
    third = 1.0 / 3.0
    out: list[Tensor] = []
    for n in range(len(p0)):
        k1 = _mlp_tail(torch.addmm(p0[n], x, w_state), weights, biases)
        k2 = _mlp_tail(torch.addmm(p1[n], x + k1 * third, w_state), weights, biases)
        k3 = _mlp_tail(torch.addmm(p2[n], x + k2 - k1 * third, w_state), weights, biases)
        k4 = _mlp_tail(torch.addmm(p3[n], x + k1 - k2 + k3, w_state), weights, biases)
        x = x + (k1 + 3.0 * (k2 + k3) + k4) * 0.125
        out.append(x)
    return out


KERNELS = ("auto", "compiled", "torch")


class SpinNODE(nn.Module):
    """Neural-ODE twin of a device with named drive and condition inputs and one measured output."""

    def __init__(self, arch: TwinArchitecture, norm: Normalisation | None = None) -> None:
        super().__init__()
        self.arch = arch
        k, c, hdim = arch.n_delays, len(arch.condition_names), arch.hidden
        layers = [nn.Linear(arch.n_inputs, hdim)]
        layers += [nn.Linear(hdim, hdim) for _ in range(arch.n_hidden_layers - 1)]
        layers.append(nn.Linear(hdim, k))
        self.layers = nn.ModuleList(layers)
        # a small last layer: the twin starts close to "nothing changes", which keeps the
        # first free-running validations finite
        with torch.no_grad():
            self.layers[-1].weight.mul_(0.1)
            self.layers[-1].bias.zero_()
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self.register_buffer("u_mean", torch.zeros(len(arch.drive_names)))
        self.register_buffer("u_std", torch.ones(len(arch.drive_names)))
        self.register_buffer("c_mean", torch.zeros(c))
        self.register_buffer("c_std", torch.ones(c))
        if norm is not None:
            self.set_normalisation(norm)

    # --- normalisation -----------------------------------------------------------------------
    def set_normalisation(self, norm: Normalisation) -> None:
        c, d = len(self.arch.condition_names), len(self.arch.drive_names)
        if len(norm.c_mean) != c or len(norm.c_std) != c:
            raise ConfigError(f"normalisation needs {c} condition mean/std values")
        u_mean = torch.as_tensor(norm.u_mean, dtype=self.u_mean.dtype).reshape(-1)
        u_std = torch.as_tensor(norm.u_std, dtype=self.u_std.dtype).reshape(-1)
        if u_mean.numel() != d or u_std.numel() != d:
            raise ConfigError(f"normalisation needs {d} drive mean/std values")
        if not (norm.y_std > 0 and bool(torch.all(u_std > 0))):
            raise ConfigError(f"normalisation y_std and u_std must be > 0, got {norm.y_std}, {norm.u_std}")
        with torch.no_grad():
            self.y_mean.fill_(norm.y_mean)
            self.y_std.fill_(norm.y_std)
            self.u_mean.copy_(u_mean)
            self.u_std.copy_(u_std)
            self.c_mean.copy_(torch.as_tensor(norm.c_mean, dtype=self.c_mean.dtype))
            self.c_std.copy_(
                torch.as_tensor([s if s > 0 else 1.0 for s in norm.c_std], dtype=self.c_std.dtype)
            )

    def normalisation(self) -> Normalisation:
        one = len(self.arch.drive_names) == 1
        u_mean, u_std = self.u_mean.tolist(), self.u_std.tolist()
        return Normalisation(
            float(self.y_mean),
            float(self.y_std),
            u_mean[0] if one else u_mean,
            u_std[0] if one else u_std,
            self.c_mean.tolist(),
            self.c_std.tolist(),
        )

    def norm_output(self, y: Tensor) -> Tensor:
        return (y - self.y_mean) / self.y_std

    def denorm_output(self, y: Tensor) -> Tensor:
        return y * self.y_std + self.y_mean

    def norm_drive(self, u: Tensor) -> Tensor:
        """``(B, n)`` (one drive) or ``(B, D, n)`` physical drives, normalised."""
        if u.ndim == 3:
            return (u - self.u_mean[:, None]) / self.u_std[:, None]
        return (u - self.u_mean) / self.u_std

    def norm_conditions(self, c: Tensor) -> Tensor:
        return (c - self.c_mean) / self.c_std

    # --- building blocks (normalised units) --------------------------------------------------
    def delay_features(self, u: Tensor) -> Tensor:
        """``(B, n)`` normalised drive -> ``(B, n, k)`` drive at delays 0, tau, ... (k-1) tau;
        ``(B, D, n)`` drives -> ``(B, n, D k)``, drive by drive.

        Samples before the start repeat the first sample (the level the device sat at). The
        result is a view of time-major storage ``(n, D k, B)``: the layout both integrators read
        (the compiled kernel without a copy when B is a multiple of its 16 lanes)."""
        k, d = self.arch.n_delays, self.arch.delay_samples
        u = u[:, None] if u.ndim == 2 else u
        batch, drives, n = u.shape
        feats = u.new_empty(n, drives * k, batch)
        for i in range(drives):
            u_t = u[:, i].T
            feats[:, i * k] = u_t
            for j in range(1, k):
                shift = min(j * d, n)
                feats[:shift, i * k + j] = u_t[:1]
                feats[shift:, i * k + j] = u_t[: n - shift]
        return feats.permute(2, 0, 1)

    def embed_output(self, y: Tensor) -> Tensor:
        """``(B, n)`` normalised output -> ``(B, n, k)`` delay-embedded states (valid from
        index ``history_samples - 1`` on; earlier rows repeat the first sample)."""
        return self.delay_features(y)

    def rhs(self, x: Tensor, u_feat: Tensor, c: Tensor) -> Tensor:
        """The plain right-hand side ``f(x, u, c)`` (normalised units, per sample time; the
        drive features ``u_feat`` of every drive, the conditions ``c`` at that time)."""
        h = torch.cat([x, u_feat, c], dim=-1)
        for layer in self.layers[:-1]:
            h = torch.tanh(layer(h))
        return self.layers[-1](h)

    # --- integrators -------------------------------------------------------------------------
    def rollout(
        self,
        x0: Tensor,
        u_feat: Tensor,
        c: Tensor,
        chunk: int = 256,
        *,
        kernel: str = "auto",
        n_states: int | None = None,
        workers: int = 1,
    ) -> Tensor:
        """Integrate from state ``x0`` ``(B, k)`` driven by drive features ``u_feat``
        ``(B, n, D k)`` at normalised conditions ``c``, ``(B, C)`` (the same over the whole
        rollout) or ``(B, n, C)`` (one value per sample, held over each step): returns the
        states at samples 1..n-1, ``(B, n-1, n_states)`` (all normalised; ``n_states`` leading
        components, default all). Differentiable; use under ``torch.no_grad()`` for simulation.

        ``kernel``: ``"compiled"`` is the fused CPU kernel (:mod:`spinlab.twin.kernel`: float32,
        several times faster), ``"torch"`` the torch loop (any device and dtype), ``"auto"`` the
        kernel where it applies. ``workers`` threads share a large batch (simulation)."""
        if kernel not in KERNELS:
            raise ConfigError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        from spinlab.twin import kernel as compiled

        params = list(self.parameters())
        n_states = x0.shape[-1] if n_states is None else n_states
        held_from = u_feat.shape[-1]
        if c.ndim == 3:  # time-varying conditions: held features after the drive features
            u_feat, c = torch.cat([u_feat, c], dim=-1), c.new_zeros(c.shape[0], 0)
        if kernel != "torch" and compiled.supports(x0, u_feat, c, params):
            return compiled.rollout(
                x0,
                u_feat,
                c,
                params,
                hold=self.arch.interpolation == "hold",
                held_from=held_from,
                n_states=n_states,
                workers=workers,
            )
        if kernel == "compiled":
            raise ConfigError(
                "the compiled twin integrator needs float32 CPU tensors and a C++ "
                "compiler (see spinlab.twin.kernel); use kernel='torch'"
            )
        if workers > 1 and x0.device.type == "cpu" and x0.shape[0] >= 64 * workers:
            return self._sharded(x0, u_feat, c, chunk, workers, held_from)[..., :n_states]
        return self._torch_rollout(x0, u_feat, c, chunk, held_from)[..., :n_states]

    def _torch_rollout(self, x0: Tensor, u_feat: Tensor, c: Tensor, chunk: int, held_from: int) -> Tensor:
        """The torch loop. The drive/condition part of the first layer is computed per time
        chunk, laid out ``(time, batch, hidden)`` so every step reads contiguous rows, and
        blended linearly for the stages between samples (exact: it is linear in the drive);
        features from ``held_from`` on are held at the step's end sample. Chunking bounds the
        memory for long drives."""
        k, f = self.arch.n_delays, u_feat.shape[-1]
        first = self.layers[0]
        w_state = first.weight[:, :k].T.contiguous()
        w_drive = first.weight[:, k : k + f].T  # (F, H)
        base = first.bias if c.shape[-1] == 0 else torch.addmm(first.bias, c, first.weight[:, k + f :].T)
        base = base.expand(x0.shape[0], -1)  # (B, H)
        weights = [layer.weight.T.contiguous() for layer in self.layers[1:]]
        biases = [layer.bias for layer in self.layers[1:]]
        hold = self.arch.interpolation == "hold"
        u_t = u_feat.transpose(0, 1)  # (n, B, F) view
        outputs = []
        x = x0
        n_steps = u_t.shape[0] - 1
        for start in range(0, n_steps, chunk):
            stop = min(start + chunk, n_steps)
            with torch.profiler.record_function("twin.drive_input"):  # bench_twin's breakdown
                if hold:
                    pre = torch.matmul(u_t[start + 1 : stop + 1], w_drive) + base  # (L, B, H)
                    stages = (pre, pre, pre, pre)
                else:
                    pre = torch.matmul(u_t[start : stop + 1, :, :held_from], w_drive[:held_from]) + base
                    if held_from < f:
                        held = torch.matmul(u_t[start + 1 : stop + 1, :, held_from:], w_drive[held_from:])
                        a, b = pre[:-1] + held, pre[1:] + held
                    else:
                        a, b = pre[:-1], pre[1:]
                    stages = (a, (2.0 * a + b) / 3.0, (a + 2.0 * b) / 3.0, b)
            states = _rk38_loop(x, *(s.unbind(0) for s in stages), w_state, weights, biases)
            x = states[-1]
            outputs.append(torch.stack(states, dim=1))
        if not outputs:
            return x0.new_zeros((x0.shape[0], 0, x0.shape[1]))
        return torch.cat(outputs, dim=1)

    def _sharded(
        self, x0: Tensor, u_feat: Tensor, c: Tensor, chunk: int, workers: int, held_from: int
    ) -> Tensor:
        """The torch loop on ``workers`` batch shards in parallel threads (the scripted loop
        releases the GIL), one torch thread each: on these small ops torch's own intra-op
        threads cost more in synchronisation than they gain."""
        from concurrent.futures import ThreadPoolExecutor

        shards = torch.arange(x0.shape[0]).tensor_split(workers)
        threads, grad = torch.get_num_threads(), torch.is_grad_enabled()

        def one(i: Tensor) -> Tensor:
            with torch.set_grad_enabled(grad):  # grad mode is per thread
                return self._torch_rollout(x0[i], u_feat[i], c[i], chunk, held_from)

        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="twin") as pool:
                return torch.cat(list(pool.map(one, shards)), dim=0)
        finally:
            torch.set_num_threads(threads)

    def reference_rollout(self, x0: Tensor, u_feat: Tensor, c: Tensor) -> Tensor:
        """Same integration with ``torchdiffeq.odeint(method="rk4")`` (slow; the reference)."""
        from torchdiffeq import odeint

        n = u_feat.shape[1]
        hold = self.arch.interpolation == "hold"
        varying = c.ndim == 3  # time-varying conditions are held at the step's end sample

        def func(t: Tensor, x: Tensor) -> Tensor:
            after = int(torch.clamp(torch.ceil(t), 0, n - 1))  # t is nudged into the step
            if hold:
                u = u_feat[:, after]
            else:
                i = int(torch.clamp(torch.floor(t), 0, n - 2))
                frac = (t - i).to(u_feat.dtype)
                u = u_feat[:, i] * (1 - frac) + u_feat[:, i + 1] * frac
            return self.rhs(x, u, c[:, after] if varying else c)

        t = torch.arange(n, dtype=torch.float64)
        states = odeint(func, x0, t, method="rk4", options={"perturb": hold or varying})
        return states[1:].transpose(0, 1)

    # --- physical-unit API -------------------------------------------------------------------
    def condition_tensor(self, conditions: Mapping[str, Any] | None, batch: int) -> Tensor:
        """Physical conditions (name -> number or per-drive values) -> ``(B, C)`` tensor."""
        conditions = dict(conditions or {})
        missing = [n for n in self.arch.condition_names if n not in conditions]
        if missing:
            raise ConfigError(
                f"the twin needs condition(s) {missing} (it was trained on {list(self.arch.condition_names)})"
            )
        like = {"dtype": self.y_mean.dtype, "device": self.y_mean.device}
        cols = [
            torch.as_tensor(conditions[n], **like).reshape(-1).expand(batch)
            if torch.as_tensor(conditions[n]).numel() == 1
            else torch.as_tensor(conditions[n], **like).reshape(batch)
            for n in self.arch.condition_names
        ]
        if not cols:
            return torch.zeros(batch, 0, **like)
        return torch.stack(cols, dim=-1)

    @torch.no_grad()
    def simulate(
        self,
        drive: Tensor,
        conditions: Tensor,
        *,
        y_history: Tensor | None = None,
        settle_samples: int = 0,
        rest_drive: float | Tensor | None = None,
        chunk: int = 256,
        workers: int | None = None,
        kernel: str = "auto",
    ) -> Tensor:
        """Free-running response ``(B, n)`` to physical drives at physical conditions, on the
        model's device. ``drive`` is ``(B, n)`` for a one-drive twin, else ``(B, D, n)``;
        ``conditions`` is ``(B, C)`` (held for the whole drive) or ``(B, n, C)`` (per sample).

        With ``y_history`` ``(B, history_samples)`` (measured output up to and including the
        first sample) the state starts from measurement; otherwise the twin starts at the
        output mean and settles for ``settle_samples`` at the ``rest_drive`` level first (None:
        the drive's first sample; a number, or one per drive), as a device sits at its bias
        before the drive begins.

        ``workers`` threads share the batch on a CPU (None: as many as torch threads). The
        compiled kernel reads a float64 drive in place (a device's drive: no conversion).
        """
        if kernel not in KERNELS:
            raise ConfigError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        from spinlab.twin import kernel as compiled

        dtype, device = self.y_mean.dtype, self.y_mean.device
        k, d = self.arch.n_delays, self.arch.delay_samples
        n_drives = len(self.arch.drive_names)
        params = list(self.parameters())
        drive = torch.as_tensor(drive, device=device)
        if drive.ndim == (1 if n_drives == 1 else 2):
            drive = drive[None]
        if drive.ndim != (2 if n_drives == 1 else 3) or (n_drives > 1 and drive.shape[1] != n_drives):
            raise ConfigError(
                f"the twin takes {n_drives} drive(s) {list(self.arch.drive_names)}; "
                f"got a drive array of shape {tuple(drive.shape)}"
            )
        batch, n = drive.shape[0], drive.shape[-1]
        conditions = torch.as_tensor(conditions, dtype=dtype, device=device)
        varying = conditions.ndim == 3
        conditions = conditions if varying else conditions.reshape(batch, -1)
        direct = kernel != "torch" and n_drives == 1 and not varying and compiled.supports_model(params, k)
        drive = drive if direct and drive.dtype == torch.float64 else drive.to(dtype)
        workers = torch.get_num_threads() if workers is None else workers
        c = self.norm_conditions(conditions)
        if y_history is not None:
            hist = torch.as_tensor(y_history, dtype=dtype, device=device).reshape(batch, -1)
            hist = self.norm_output(hist)
            if hist.shape[1] < self.arch.history_samples:
                raise ConfigError(f"y_history needs {self.arch.history_samples} samples, got {hist.shape[1]}")
            x0 = torch.stack([hist[:, -1 - j * d] for j in range(k)], dim=-1)
            settle = 0
        else:
            x0 = torch.zeros(batch, k, dtype=dtype, device=device)
            settle = int(settle_samples)
        first = drive[..., 0]
        rest = (
            first
            if rest_drive is None
            else torch.as_tensor(rest_drive, dtype=dtype, device=device).reshape(-1)
        )
        if direct:
            return compiled.simulate(
                drive,
                x0,
                c,
                params,
                hold=self.arch.interpolation == "hold",
                delay_samples=d,
                settle=settle,
                rest=rest,
                u_norm=(self.u_mean, self.u_std),
                y_norm=(self.y_mean, self.y_std),
                workers=workers,
            )
        # the drive, after `settle` samples at the rest level, normalised: one pass each
        u = drive.new_empty(*drive.shape[:-1], settle + n)
        u[..., settle:] = drive
        if settle:
            level = rest.to(dtype)
            level = (
                level.reshape(first.shape)
                if level.numel() == first.numel()
                else level.reshape(-1, *(1,) * (first.ndim - 1)).expand_as(first)
            )
            u[..., :settle] = level[..., None]
            if varying:
                c = torch.cat([c[:, :1].expand(-1, settle, -1), c], dim=1)
        states = self.rollout(
            x0,
            self.delay_features(self.norm_drive(u)),
            c,
            chunk=chunk,
            kernel=kernel,
            n_states=1,
            workers=workers,
        )
        y = u.new_empty(batch, settle + n)
        y[:, 0] = x0[:, 0]
        y[:, 1:] = states[..., 0]
        return torch.addcmul(self.y_mean, y[:, settle:], self.y_std)


def resolve_torch_device(name: str | torch.device | None = "auto") -> torch.device:
    """Where the twin computes: ``"auto"`` (None) is the GPU when one is present, else the CPU;
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` ask for one. A GPU that is not there is a ConfigError."""
    text = "auto" if name is None else str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"torch device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not (
        torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    ):
        raise ConfigError(
            f"torch device {text} is not available (this torch sees "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} "
            "GPU(s)); use --torch-device cpu or auto"
        )
    return device


def build_model(
    arch: TwinArchitecture,
    norm: Normalisation | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SpinNODE:
    """A freshly initialised twin (seeded, so the same seed gives the same weights)."""
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stream is left untouched
        torch.manual_seed(seed)
        model = SpinNODE(arch, norm)
    return model.to(dtype)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__: Sequence[str] = (
    "TwinArchitecture",
    "Normalisation",
    "SpinNODE",
    "build_model",
    "count_parameters",
    "resolve_torch_device",
)
