"""Time-multiplexed reservoir computing with one physical node (Torrejon et al., Nature 2017).

One oscillator stands in for N "virtual nodes": every feature frame ``f`` (C channels) is
multiplied by a fixed random mask ``M`` (N x C); the N values are applied one after the other,
each held for ``theta_s``, so the device sees one long piecewise-constant drive per utterance.
Because ``theta_s`` is shorter than the oscillator's relaxation time, each node's response
mixes its own input with its neighbours' (the coupling), and the power's nonlinear dependence
on current supplies the nonlinearity. The response sampled per node is the reservoir state; a
linear (ridge) readout trained on those states classifies each frame, and an utterance's class
is the argmax of the readout summed over its frames.

This module holds :class:`Encoder` (mask, scaling, drive layout), :func:`node_states`
(response -> states), :func:`pack` (many utterances into one padded batch), :func:`device_states`
(drive a Device with many utterances) and :func:`pool_states` (one vector per utterance). The
readout, :class:`~spinlab.analysis.ridge.RidgeReadout` with :func:`~spinlab.analysis.ridge.fit_cv`
(grouped k-fold choice of the regularisation on the training set only), is analysis:
:mod:`spinlab.analysis.ridge`.

Why pooling: the per-frame readout (Torrejon et al.) sums frame votes, so it cannot tell *when*
in a word a sound occurs, and it learns the training voices' spectra frame by frame. Averaging
the states over a few equal parts of the word (beginning, middle, end) plus their spread over
the word gives one vector per utterance that keeps the word's time course and is far less
speaker-specific; it is also small enough to store for re-fitting (enrolment of a new voice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinlab.device import Device
from spinlab.errors import ConfigError
from spinlab.waveform import Waveform

MASK_KINDS = ("binary", "normal")
NODE_FEATURES = ("mean", "samples")
#: Sane ranges of an encoder's settings (a saved readout may name any number): a node is held
#: 1 ps .. 1 ms and sampled by at most 100 AWG samples; masks have at most 10,000 nodes and
#: 1,024 feature channels. Outside them a drive is unphysical or too long to hold in memory.
THETA_RANGE_S = (1e-12, 1e-3)
MAX_SAMPLES_PER_NODE = 100
MAX_NODES = 10_000
MAX_CHANNELS = 1024


def make_mask(n_nodes: int, n_channels: int, kind: str = "binary", seed: int = 0) -> np.ndarray:
    """Input mask ``(n_nodes, n_channels)`` from ``numpy.random.default_rng(seed)``.

    ``binary``: entries +-1 with equal probability (Torrejon et al.; what a two-level AWG
    pattern gives). ``normal``: standard normal entries (a richer projection, same variance).
    """
    if n_nodes < 1 or n_channels < 1:
        raise ConfigError(f"mask needs n_nodes >= 1 and n_channels >= 1, got {n_nodes} x {n_channels}")
    rng = np.random.default_rng(seed)
    if kind == "binary":
        return rng.choice(np.array([-1.0, 1.0]), size=(n_nodes, n_channels))
    if kind == "normal":
        return rng.standard_normal((n_nodes, n_channels))
    raise ConfigError(f"mask kind {kind!r} is unknown; use one of {list(MASK_KINDS)}")


_CONTROLLER: Any = None


def _one_blas_thread() -> Any:
    """The mask product on one BLAS thread: it is small (frames x channels x nodes), and threads
    made it 25-50 ms instead of 0.1 ms on a busy 2-core machine, 40 % of a 200-word run
    (measured); the controller is built once, so the limit costs ~0.4 ms."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


@dataclass
class Encoder:
    """Features -> drive volts: mask, scale into the safe range, hold each node ``theta_s``.

    Drive sample values are ``clip(amplitude_V * (f @ M.T) / scale, -amplitude_V, +amplitude_V)``
    where ``scale = input_sigma * std(masked training features)`` (set by :meth:`fit`), so about
    ``erf(input_sigma / sqrt 2)`` of the node inputs stay unclipped. Each node value is repeated
    ``samples_per_node`` times on a grid ``dt_s = theta_s / samples_per_node``. The drive is
    around 0 V: the DC operating point is the bias current, a separate condition.
    """

    mask: np.ndarray
    theta_s: float = 100e-9
    samples_per_node: int = 1
    amplitude_V: float = 0.4
    input_sigma: float = 1.5
    scale: float | None = None

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=np.float64)
        if self.mask.ndim != 2:
            raise ConfigError(f"mask must be 2-D (nodes, channels), got shape {self.mask.shape}")
        if not (1 <= self.mask.shape[0] <= MAX_NODES and 1 <= self.mask.shape[1] <= MAX_CHANNELS):
            raise ConfigError(
                f"mask must have 1..{MAX_NODES} nodes and 1..{MAX_CHANNELS} channels, "
                f"got shape {self.mask.shape}"
            )
        if not np.all(np.isfinite(self.mask)):
            raise ConfigError("mask holds NaN or infinite values")
        low, high = THETA_RANGE_S
        if not (low <= self.theta_s <= high):
            raise ConfigError(
                f"theta_s (the node time) must be between {low:g} and {high:g} s, got {self.theta_s!r}"
            )
        if (
            int(self.samples_per_node) != self.samples_per_node
            or not 1 <= self.samples_per_node <= MAX_SAMPLES_PER_NODE
        ):
            raise ConfigError(
                f"samples_per_node must be an integer 1..{MAX_SAMPLES_PER_NODE}, "
                f"got {self.samples_per_node!r}"
            )
        if not 0 < self.amplitude_V < np.inf:
            raise ConfigError(f"amplitude_V must be a positive finite number, got {self.amplitude_V!r}")
        if not 0 < self.input_sigma < np.inf:
            raise ConfigError(f"input_sigma must be a positive finite number, got {self.input_sigma!r}")
        if self.scale is not None and not 0 < self.scale < np.inf:
            raise ConfigError(f"scale must be a positive finite number, got {self.scale!r}")

    @property
    def n_nodes(self) -> int:
        return int(self.mask.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.mask.shape[1])

    @property
    def dt_s(self) -> float:
        """Sample interval of the drive (one AWG sample)."""
        return self.theta_s / self.samples_per_node

    def samples_per_frame(self) -> int:
        return self.n_nodes * self.samples_per_node

    def masked(self, features: np.ndarray) -> np.ndarray:
        """Node inputs ``(frames, n_nodes)`` before scaling: the no-device baseline's features."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.n_channels:
            raise ConfigError(f"features must have shape (frames, {self.n_channels}), got {features.shape}")
        with _one_blas_thread():
            return features @ self.mask.T

    def fit(self, train_features: Sequence[np.ndarray]) -> Encoder:
        """Set ``scale`` from the training features (never the test set)."""
        masked = np.concatenate([self.masked(f) for f in train_features])
        std = float(masked.std())
        if not std > 0:
            raise ConfigError("the masked training features are constant; cannot scale the drive")
        self.scale = self.input_sigma * std
        return self

    def drive(self, features: np.ndarray) -> np.ndarray:
        """One utterance's drive samples (volts), ``frames * n_nodes * samples_per_node`` long."""
        if self.scale is None:
            raise ConfigError("Encoder.fit(train_features) must be called before drive()")
        node_V = np.clip(
            self.amplitude_V * self.masked(features) / self.scale, -self.amplitude_V, self.amplitude_V
        )
        return np.repeat(node_V.reshape(-1), self.samples_per_node)


def node_states(
    response: np.ndarray, n_frames: int, n_nodes: int, samples_per_node: int = 1, reduce: str = "mean"
) -> np.ndarray:
    """Reservoir states from one utterance's response (padding already removed or not).

    ``mean``: the response averaged over each node's hold, ``(frames, n_nodes)``.
    ``samples``: every sample of the hold is its own feature, ``(frames, n_nodes *
    samples_per_node)`` (the transient inside a hold carries extra information for free).
    """
    response = np.asarray(response, dtype=np.float64)
    need = n_frames * n_nodes * samples_per_node
    if response.shape[-1] < need:
        raise ConfigError(f"response has {response.shape[-1]} samples, the utterance needs {need}")
    block = response[:need].reshape(n_frames, n_nodes, samples_per_node)
    if reduce == "mean":
        return block.mean(axis=2)
    if reduce == "samples":
        return block.reshape(n_frames, n_nodes * samples_per_node)
    raise ConfigError(f"node feature reduction {reduce!r} is unknown; use one of {list(NODE_FEATURES)}")


def pool_states(states: np.ndarray, segments: int) -> np.ndarray:
    """One utterance's frame states ``(frames, D)`` -> ``(1, (segments + 1) * D)``: the mean
    over each of ``segments`` equal parts of the word, then the standard deviation over all
    frames. ``segments = 0`` returns the frame states unchanged (the per-frame readout)."""
    states = np.asarray(states)
    if segments == 0:
        return states
    if segments < 0:
        raise ConfigError(f"segments must be >= 0, got {segments}")
    states = states.astype(np.float64)
    # a word shorter than ``segments`` frames repeats its frames rather than leaving parts empty
    parts = np.array_split(states, segments) if len(states) >= segments else [states] * segments
    pooled = [p.mean(axis=0) for p in parts] + [states.std(axis=0)]
    return np.concatenate(pooled)[None, :]


def device_states(
    device: Device,
    encoder: Encoder,
    features: Sequence[np.ndarray],
    conditions: Mapping[str, float],
    node_features: str = "mean",
    max_batch_samples: int = 64_000_000,
    between_batches: Callable[[int, int], None] | None = None,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Drive ``device`` with every utterance (length-sorted padded batches); states of each.

    Padding (0 V, i.e. the bare operating point) follows each drive and its response is
    discarded. ``reduce`` maps each utterance's frame states as soon as they exist (e.g.
    :func:`pool_states`, so the frames of thousands of utterances are never all in memory);
    ``between_batches(done, total)`` runs after every device call (progress, pause/abort).
    """
    lengths = [len(f) * encoder.samples_per_frame() for f in features]
    states: list[np.ndarray | None] = [None] * len(features)
    done = 0
    for batch_idx in length_batches(lengths, max_batch_samples):
        # drives are built per batch: the whole set at 400 ns x 4 samples is ~2.7 GB of float64
        batch, lengths_b = pack([encoder.drive(features[i]) for i in batch_idx])
        response = device.respond(Waveform(batch, encoder.dt_s, "V"), dict(conditions))
        for row, i, n in zip(response.as_batch().samples, batch_idx, lengths_b):
            # float32 halves the memory of ~141 k frames x 2,400 states; the readout
            # standardises in float64
            frames = node_states(
                row[:n], len(features[i]), encoder.n_nodes, encoder.samples_per_node, node_features
            ).astype(np.float32)
            states[i] = frames if reduce is None else reduce(frames).astype(np.float32)
        done += len(batch_idx)
        if between_batches is not None:
            between_batches(done, len(features))
    return states  # type: ignore[return-value]


def piece_states(
    device: Device,
    encoder: Encoder,
    features: Sequence[np.ndarray],
    conditions: Mapping[str, float],
    node_features: str = "mean",
    piece_frames: int = 8,
    warmup_frames: int = 1,
) -> list[np.ndarray]:
    """Frame states of each utterance, driven as pieces of ``piece_frames`` frames side by side
    in one batch, each piece after ``warmup_frames`` frames of the drive before it (whose
    response is dropped).

    Why: a simulator or a twin integrates one long drive step by step, but a batch of short ones
    in nearly the same time, so this cuts the latency of one word many times. It is exact up to
    the device's memory of its state ``warmup_frames`` frames back: one frame (hundreds of
    node holds) is hundreds of relaxation times for the oscillators here.
    """
    if piece_frames < 1 or warmup_frames < 0:
        raise ConfigError(
            f"piece_frames must be >= 1 and warmup_frames >= 0, got {piece_frames}, {warmup_frames}"
        )
    pieces, owners = [], []
    for i, f in enumerate(features):
        for start in range(0, len(f), piece_frames):
            warm = min(warmup_frames, start)
            pieces.append(f[start - warm : start + piece_frames])
            owners.append((i, warm))
    raw = device_states(device, encoder, pieces, conditions, node_features)
    out: list[list[np.ndarray]] = [[] for _ in features]
    for (i, warm), frames in zip(owners, raw):
        out[i].append(frames[warm:])
    return [np.concatenate(parts) for parts in out]


def pack(drives: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Equal-length batch ``(B, max_len)`` of drives, zero-padded at the end, and their lengths.

    Padding goes after each drive, so a causal device's response to the real samples is
    unaffected; callers cut the response back to ``lengths``.
    """
    if not drives:
        raise ConfigError("nothing to pack")
    lengths = np.array([len(d) for d in drives], dtype=np.int64)
    batch = np.zeros((len(drives), int(lengths.max())))
    for row, d in zip(batch, drives):
        row[: len(d)] = d
    return batch, lengths


def length_batches(lengths: Sequence[int], max_samples: int) -> list[np.ndarray]:
    """Group indices by similar length so padded batches waste little device time.

    Indices are sorted by length; a batch grows while ``batch_size * longest <= max_samples``
    (at least one item per batch).
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches, current, longest = [], [], 0
    for idx in order:
        n = int(lengths[idx])
        if current and (len(current) + 1) * max(longest, n) > max_samples:
            batches.append(np.array(current))
            current, longest = [], 0
        current.append(int(idx))
        longest = max(longest, n)
    if current:
        batches.append(np.array(current))
    return batches
