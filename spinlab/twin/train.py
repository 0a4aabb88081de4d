"""Training the twin: offline (all data at hand) and online (fit while the device records).

Both share :class:`TwinTrainer`: Adam on the MSE of short random segments integrated with
the fast RK4 (backprop through the solver, not the adjoint: 2-2.5x faster on short windows),
validation by integrating whole held-out trajectories (NRMSE), best weights kept, early stop
at a target. The online trainer adds a producer thread that pushes recordings into a bounded
queue; the trainer consumes them while it trains and tells the producer to stop as soon as the
validation NRMSE meets the target, or when the run it works for ends (see :class:`_Producer`).
"""

from __future__ import annotations

import copy
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field

from spinlab.config import Config, NonNegative, NonNegativeInt, Positive, PositiveInt
from spinlab.engine.signals import shield, stops_with
from spinlab.errors import ConfigError
from spinlab.twin.data import SegmentSampler, Trajectory, nrmse_per_rest_level
from spinlab.twin.model import SpinNODE

log = logging.getLogger("spinlab.twin")


class TrainConfig(Config):
    """Optimisation settings (defaults follow Chen et al.: 50 segments x 20 points, Adam)."""

    n_segments: PositiveInt = Field(50, description="Segments in one optimisation batch")
    segment_samples: PositiveInt = Field(20, description="Samples integrated in each segment")
    learning_rate: Positive = Field(3e-3, description="Adam's initial learning rate")
    min_learning_rate: NonNegative = Field(
        1e-4, description="Floor of the learning rate (cosine end, plateau halving)"
    )
    max_steps: PositiveInt = Field(20000, description="Optimisation steps at most")
    validate_every: PositiveInt = Field(100, description="Steps between two validations")
    target_nrmse: Positive = Field(0.05, description="Held-out NRMSE at which training stops")
    lr_schedule: Literal["cosine", "plateau"] = Field(
        "cosine",
        description="cosine: decay to min_learning_rate over max_steps; plateau: halve (back at "
        "the best weights) after patience validations without improvement",
    )
    patience: PositiveInt = Field(30, description="Validations without improvement before a plateau halving")
    noise_injection: bool = Field(False, description="Perturb segment starts with the measured output noise")
    noise_std: NonNegative = Field(0.0, description="Measured output noise (output unit), for injection")
    max_wall_s: NonNegative | None = Field(None, description="Wall time training may take (0: no limit)")
    settle_samples: NonNegativeInt = Field(
        50, description="Samples a rest-started validation trajectory settles for"
    )
    rest_drive_V: float | Literal["auto"] | None = Field(
        None,
        description="Drive level a rest-started trajectory settles at: a number, none (its first "
        "sample) or auto (score 0 V and the first sample, keep the better)",
    )
    seed: NonNegativeInt = Field(0, description="Seed of the segment sampling and noise injection")


@dataclass
class TrainResult:
    """What a training produced: best validation NRMSE, when, and the history."""

    best_nrmse: float
    best_step: int
    steps: int
    wall_s: float
    reached_target: bool
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = ""
    batches: int = 0  # recording batches consumed (online training)
    acquired_batches: int = 0  # recording batches acquired (some may be left unused)
    acquired_device_time_s: float = 0.0
    rest_drive_V: float | None = None  # settle level of the best validation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TwinTrainer:
    """One optimisation state: model, Adam, segment sampler, validation set, best weights."""

    def __init__(
        self,
        model: SpinNODE,
        config: TrainConfig,
        *,
        run: Any = None,
        on_validate: Callable[[TwinTrainer], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.on_validate = on_validate
        self.run = run
        self.sampler = SegmentSampler(model, config.segment_samples, seed=config.seed)
        self.validation: list[Trajectory] = []
        device = model.y_mean.device
        # the fused Adam: one kernel for all weights instead of ~10 small ops per tensor
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=config.learning_rate, fused=device.type in ("cpu", "cuda")
        )
        self.noise_generator = torch.Generator(device).manual_seed(config.seed + 1)
        self.cosine = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=config.max_steps, eta_min=config.min_learning_rate
            )
            if config.lr_schedule == "cosine"
            else None
        )
        self.step_count = 0
        self.best_nrmse = math.inf
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_rest: float | None = None
        self.history: list[dict[str, float]] = []
        self._since_best = 0
        self._loss_sum = torch.zeros((), device=device)  # on the device: no copy per step
        self._loss_n = 0

    # --- data --------------------------------------------------------------------------------
    def add_training(self, trajectories: Iterable[Trajectory]) -> None:
        self.sampler.extend(trajectories)

    def add_validation(self, trajectories: Iterable[Trajectory]) -> None:
        self.validation.extend(trajectories)

    # --- one optimisation step ---------------------------------------------------------------
    def step(self) -> torch.Tensor:
        """One Adam step on a fresh batch of segments; returns the (detached) loss."""
        cfg = self.config
        x0, u_feat, c, x_true = self.sampler.sample(cfg.n_segments)
        if cfg.noise_injection and cfg.noise_std > 0:
            sigma = cfg.noise_std / float(self.model.y_std)
            x0 = x0 + sigma * torch.randn(
                x0.shape, generator=self.noise_generator, dtype=x0.dtype, device=x0.device
            )
        pred = self.model.rollout(x0, u_feat, c)
        loss = torch.nn.functional.mse_loss(pred, x_true)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        if self.cosine is not None and self.step_count <= cfg.max_steps:
            self.cosine.step()
        value = loss.detach()
        self._loss_sum += value
        self._loss_n += 1
        return value

    # --- validation --------------------------------------------------------------------------
    def validate(self) -> float:
        """Integrate every held-out trajectory, record the NRMSE, keep the best weights."""
        if not self.validation:
            raise ConfigError("no validation trajectories to validate on")
        self.model.eval()
        levels = (None, 0.0) if self.config.rest_drive_V == "auto" else (self.config.rest_drive_V,)
        scores = nrmse_per_rest_level(
            self.model, self.validation, settle_samples=self.config.settle_samples, rest_drives=levels
        )
        value = min(scores)
        rest = levels[scores.index(value)]
        self.model.train()
        if not math.isfinite(value):
            value = math.inf
        loss = float(self._loss_sum) / max(self._loss_n, 1)
        self._loss_sum.zero_()
        self._loss_n = 0
        self.history.append(
            {
                "step": self.step_count,
                "loss": loss,
                "nrmse": value,
                "lr": self.optimizer.param_groups[0]["lr"],
            }
        )
        if value < self.best_nrmse:
            self.best_nrmse, self.best_step, self.best_rest = value, self.step_count, rest
            self.best_state = copy.deepcopy(self.model.state_dict())
            self._since_best = 0
        else:
            self._since_best += 1
            if self.config.lr_schedule == "plateau" and self._since_best >= self.config.patience:
                self._reduce_learning_rate()
        if self.run is not None:
            self.run.publish("twin.loss", {"step": self.step_count, "loss": loss})
            self.run.publish("twin.nrmse", {"step": self.step_count, "nrmse": value, "best": self.best_nrmse})
            self.run.progress(
                self.step_count, self.config.max_steps, stage="training", nrmse=value, loss=loss
            )
        if self.on_validate is not None:
            self.on_validate(self)
        return value

    def _reduce_learning_rate(self) -> None:
        """Halve the rate and restart from the best weights (plateau handling)."""
        self._since_best = 0
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * 0.5, self.config.min_learning_rate)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def scheduled_validation(self, start: float) -> str | None:
        """Validate (and checkpoint the run) every ``validate_every`` steps; the stop reason
        ("target" or "max_wall_s", wall time counted from ``start``) or None to go on."""
        cfg = self.config
        if self.step_count % cfg.validate_every != 0:
            return None
        self.validate()  # reports progress to the run: a checkpoint (pause, abort, signals)
        if self.reached_target:
            return "target"
        if cfg.max_wall_s and time.perf_counter() - start > cfg.max_wall_s:
            return "max_wall_s"
        return None

    @property
    def reached_target(self) -> bool:
        return self.best_nrmse <= self.config.target_nrmse

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def result(self, wall_s: float, reason: str) -> TrainResult:
        return TrainResult(
            self.best_nrmse,
            self.best_step,
            self.step_count,
            wall_s,
            self.reached_target,
            list(self.history),
            reason,
            rest_drive_V=self.best_rest,
        )


def train_offline(
    model: SpinNODE,
    train: Sequence[Trajectory],
    validation: Sequence[Trajectory],
    config: TrainConfig,
    *,
    run: Any = None,
    on_validate: Callable[[TwinTrainer], None] | None = None,
) -> TrainResult:
    """Fit on ``train`` until the validation NRMSE meets the target (or the step/time budget
    is spent); the model ends with the best weights seen. ``on_validate(trainer)`` runs after
    every validation (e.g. to write a checkpoint)."""
    trainer = TwinTrainer(model, config, run=run, on_validate=on_validate)
    trainer.add_training(train)
    trainer.add_validation(validation)
    start = time.perf_counter()
    reason = "max_steps"
    try:
        while trainer.step_count < config.max_steps:
            trainer.step()
            stop_reason = trainer.scheduled_validation(start)
            if stop_reason is not None:
                reason = stop_reason
                break
        else:
            if not trainer.history or trainer.history[-1]["step"] != trainer.step_count:
                trainer.validate()
    finally:
        trainer.restore_best()
    return trainer.result(time.perf_counter() - start, reason)


# --- online training -------------------------------------------------------------------------
class OnlineConfig(Config):
    """Pacing of acquisition by training, buffering, and how long to go on after the data.

    The trainer takes the next recording batch only every ``steps_per_batch`` optimisation
    steps (sooner while it lacks training or validation data); the producer blocks on the
    bounded queue in between, so the device records only as fast as the twin can use the data
    and acquisition ends soon after the target is met, not at the duration cap (a fast
    simulator would otherwise deliver the whole cap before the first validation)."""

    steps_per_batch: NonNegativeInt = Field(
        50, description="Optimisation steps between two recording batches"
    )
    queue_size: PositiveInt = Field(
        2, description="Recording batches buffered between acquisition and trainer"
    )
    max_steps_after_data: NonNegativeInt = Field(
        20000, description="Training steps once acquisition has ended"
    )


_DONE = object()


class _Producer(threading.Thread):
    """Runs the acquisition iterator and pushes each recording batch into the queue.

    It stops within one record when ``stop`` is set (the trainer is done) or the run it records
    through ends (``run.stopping``: a signal, an abort, a failure): the device checks ``stop``
    before every record, the run refuses its next step, and no wait here outlasts 0.1 s."""

    def __init__(
        self, source: Iterator[Any], out: queue.Queue, stop: threading.Event, run: Any = None
    ) -> None:
        super().__init__(name="twin-acquisition", daemon=True)
        self.source, self.out, self.stop, self.run_ctx = source, out, stop, run
        self.error: BaseException | None = None
        self.produced = 0
        self.device_time_s = 0.0  # everything acquired, consumed or not

    def halted(self) -> bool:
        return self.stop.is_set() or bool(getattr(self.run_ctx, "stopping", False))

    def run(self) -> None:
        try:
            with stops_with(self.stop):
                for batch in self.source:
                    self.produced += 1
                    self.device_time_s += float(getattr(batch, "device_time_s", 0.0))
                    while not self.halted():
                        try:
                            self.out.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self.halted():
                        break
        except BaseException as exc:  # handed to the trainer thread, re-raised there
            if not self.halted():
                self.error = exc
        finally:
            close = getattr(self.source, "close", None)
            if close is not None:
                close()
            while True:
                try:
                    self.out.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    if self.halted():
                        try:
                            self.out.get_nowait()
                        except queue.Empty:
                            pass


def train_online(
    model: SpinNODE,
    source: Iterator[Any],
    config: TrainConfig,
    online: OnlineConfig = OnlineConfig(),
    *,
    run: Any = None,
    on_batch: Callable[[Any], None] | None = None,
    on_validate: Callable[[TwinTrainer], None] | None = None,
) -> TrainResult:
    """Fit while data arrives from ``source``, an iterator of recording batches (objects with
    ``trajectories`` and a ``validation`` flag, see ``protocols.acquire.RecordingBatch``) run in
    a producer thread. Acquisition stops as soon as the validation NRMSE meets the target;
    when the source ends first (duration cap), training continues on what was recorded for
    at most ``online.max_steps_after_data`` steps. ``on_batch(batch)`` is called in this
    thread for every batch (to record it in the run file: HDF5 is written from one thread).

    The model's normalisation must be set before (from the first batch, see the CLI)."""
    trainer = TwinTrainer(model, config, run=run, on_validate=on_validate)
    stop = threading.Event()
    buffer: queue.Queue = queue.Queue(maxsize=online.queue_size)
    producer = _Producer(source, buffer, stop, run)
    start = time.perf_counter()
    n_batches = 0
    data_done = False
    steps_at_data_end = 0
    last_pull = 0
    reason = "max_steps"
    producer.start()
    try:
        while True:
            # the next batch when training has used the last one (or data is missing)
            while not data_done:
                must_wait = trainer.sampler.n_windows == 0 or not trainer.validation
                if not must_wait and trainer.step_count - last_pull < online.steps_per_batch:
                    break
                try:
                    item = buffer.get(timeout=0.5) if must_wait else buffer.get_nowait()
                except queue.Empty:
                    if producer.error is not None:
                        raise producer.error
                    if must_wait:
                        if run is not None:
                            run.checkpoint()
                        continue
                    break
                if item is _DONE:
                    data_done = True
                    steps_at_data_end = trainer.step_count
                    if producer.error is not None:
                        raise producer.error
                    break
                if on_batch is not None:
                    on_batch(item)
                (trainer.add_validation if item.validation else trainer.add_training)(item.trajectories)
                n_batches += 1
                last_pull = trainer.step_count
            if trainer.sampler.n_windows == 0 or not trainer.validation:
                if data_done:
                    raise ConfigError(
                        "acquisition ended before there was both training and validation data; "
                        "record for longer or with shorter recordings"
                    )
                continue
            trainer.step()
            stop_reason = trainer.scheduled_validation(start)
            if stop_reason is not None:
                reason = stop_reason
                break
            if trainer.step_count >= config.max_steps:
                reason = "max_steps"
                break
            if data_done and trainer.step_count - steps_at_data_end >= online.max_steps_after_data:
                reason = "data_exhausted"
                break
    finally:
        with shield():  # a second signal must not leave the producer driving
            stop.set()
            producer.join(timeout=30)  # it ends at its next record
        if producer.is_alive():
            log.warning("the acquisition thread did not stop within 30 s")
        trainer.restore_best()
    result = trainer.result(time.perf_counter() - start, reason)
    result.batches = n_batches
    result.acquired_batches = producer.produced
    result.acquired_device_time_s = producer.device_time_s
    return result


__all__ = ["TrainConfig", "TrainResult", "TwinTrainer", "train_offline", "OnlineConfig", "train_online"]
