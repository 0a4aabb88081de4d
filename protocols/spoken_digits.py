"""Spoken-digit recognition with the oscillator as a time-multiplexed reservoir.

Plan (Torrejon et al., Nature 547, 428 (2017)): FSDD recordings -> Lyon cochleagram (normalised
per channel on the training set) -> input mask -> one drive per utterance (N virtual nodes per
frame, each held ``theta_s``) -> ``Device.respond`` in length-sorted padded batches (one
recorded step each) -> per-node states -> ridge readout (alpha by k-fold on the training set)
-> class = argmax of the readout summed over the utterance's frames. Two no-device baselines run
the same readout: on the masked features (``baseline_accuracy``, linear, as in Torrejon et al.)
and on the node drive values exactly as sent, clipping included (``drive_baseline_accuracy``);
the difference to the latter is what the device itself adds.

Voices not in the training set (what a lab microphone hears), measured by leave-one-speaker-out
(``benchmarks/bench_speaker_independence.py``): Torrejon's per-frame readout learns the training
voices frame by frame. The defaults therefore pool each word's states over three equal parts plus
their spread (``segments``, node states averaged over the hold) and add speed-perturbed copies of
the training audio (``augment_speeds``); both were chosen by speaker-grouped CV inside the
training speakers, never on a held-out one. The features are normalised per voice (each
speaker's cochleagram by its own channel statistics, no labels needed: ``normalisation``), which
inner CV chose in every fold and which lifts leave-one-speaker-out most (docs/results.md).
``segments = 0`` restores the per-frame readout. The run saves the fitted readout
(``readout.h5``, :mod:`spinlab.speech.readout`) for `spinlab listen` and `spinlab enrol` (which
takes a new voice's statistics from its enrolment words).

Operating point (defaults of :class:`SpokenDigitsConfig`): bias 6 mA (z = 1.2), drive
+-0.5 V, 600 nodes held 400 ns with 2 samples each (a 200 ns grid), every sample a readout
feature. Why: near threshold the vortex responds strongly nonlinearly but slowly, so each node
is held for about two relaxation times and the transient within the hold is read out; at the
twin's original point (7.5 mA, 100 ns nodes) the state is mostly a low-pass of the drive and the
gain over the linear baseline comes from clipping the drive instead. Two samples per node
rather than four halve the drive samples (~170 M for FSDD) at a cost of about half a point; that
decides the run time on the twin and the bench. The measurements behind these choices, and the
command that reproduces them, are in the README ("The spoken-digit operating point").
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
from matplotlib.figure import Figure
from pydantic import Field, model_validator
from threadpoolctl import threadpool_limits

from spinlab.analysis import statistics
from spinlab.analysis.reference import pooled_reference
from spinlab.analysis.ridge import RidgeReadout, fit_cv
from spinlab.config import Config, NonNegative, NonNegativeInt, Positive, PositiveInt
from spinlab.device import Device
from spinlab.engine import Plan, RunContext
from spinlab.engine.beside import Beside, Phase
from spinlab.engine.figures import device_name, label, prefix, scaled
from spinlab.engine.plan import command, make_config
from spinlab.errors import ConfigError
from spinlab.protocols.acquire import require_conditions
from spinlab.speech.audio import Utterance, list_fsdd
from spinlab.speech.augment import VTLP_RANGE, channel_frequencies, vtlp
from spinlab.speech.encoder import (
    MASK_KINDS,
    NODE_FEATURES,
    Encoder,
    device_states,
    length_batches,
    make_mask,
    pool_states,
)
from spinlab.speech.features import ChannelNormalizer, FeatureConfig, utterance_features
from spinlab.speech.normalise import (
    NORMALISATIONS,
    STATE_NORMALISATIONS,
    TRAINING_VOICES,
    VoiceNormaliser,
    VoiceStats,
    by_voice,
)
from spinlab.speech.readout import DigitReadout, TrainingStates
from spinlab.speech.readout_file import FILE_NAME as READOUT_FILE
from spinlab.waveform import Waveform

SPLITS = ("standard", "speaker")
#: Utterance indices below this are the test set of the standard FSDD split.
STANDARD_TEST_INDICES = 5
N_CLASSES = 10


class SpokenDigitsConfig(Config):
    """Everything that defines a spoken-digit run (stored in the run file)."""

    data_dir: str = Field(
        description="Folder of FSDD .wav recordings (default: $SPINLAB_FSDD, else the "
        "`spinlab data fetch fsdd` cache)"
    )
    split: Literal["standard", "speaker"] = Field(
        "standard",
        description="standard (utterance indices 0-4 test, 5-49 train) or speaker (test on "
        "test_speaker, train on the others)",
    )
    test_speaker: str | None = Field(None, description="Held-out speaker of the speaker split")
    n_nodes: PositiveInt = Field(600, description="Virtual nodes per frame")
    theta_s: Positive = Field(400e-9, description="Hold time of one virtual node")
    samples_per_node: PositiveInt = Field(
        2, description="AWG samples per node (drive interval = theta_s / samples_per_node)"
    )
    node_features: Literal[NODE_FEATURES] = Field(
        "mean",
        description="mean (node state = response averaged over its hold) or samples (each sample a state)",
    )
    segments: NonNegativeInt = Field(
        3,
        description="Readout input: states pooled over N parts of each word plus their spread; 0 = "
        "per-frame readout (frame votes summed), which generalises worse to new voices",
    )
    augment_speeds: tuple[Annotated[float, Field(ge=0.5, le=2.0)], ...] = Field(
        (0.9, 1.1),
        description="Training copies of the audio at these speeds (each one more pass "
        "through the device), or none",
    )
    augment_vtlp: tuple[Annotated[float, Field(ge=VTLP_RANGE[0], le=VTLP_RANGE[1])], ...] = Field(
        (),
        description="Training copies of the cochleagram warped on its frequency axis by these "
        "factors (vocal-tract-length perturbation; each one more pass through the device), or none",
    )
    normalisation: Literal[NORMALISATIONS] = Field(
        "speaker",
        description="Feature normalisation: speaker (each voice by its own statistics, unlabelled; "
        "a new voice's come from its enrolment words), channel (training-set statistics only) or "
        "utterance (each word by its own, CMVN)",
    )
    state_normalisation: Literal[STATE_NORMALISATIONS] = Field(
        "none",
        description="Pooled device states: none, or speaker (each voice, and each augmented copy "
        "of it, standardised by its own statistics, unlabelled; needs segments > 0)",
    )
    mask_kind: Literal[MASK_KINDS] = Field(
        "binary", description="binary (+-1, Torrejon) or normal mask entries"
    )
    bias_A: NonNegative = Field(6e-3, description="DC bias current of the oscillator (the bias_A condition)")
    field_T: float | None = Field(
        None, description="Magnetic field of the run (T; none: the device's own); needs field control"
    )
    drive_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="Drive amplitude as a fraction of the device's limits.max_drive_V"
    )
    input_sigma: Positive = Field(
        1.75,
        description="Training standard deviations of the node inputs mapped "
        "to the amplitude (larger clips less)",
    )
    feature_kind: str = Field("lyon", description="Features: lyon (cochleagram), mfcc or logmel")
    alphas: tuple[Positive, ...] = Field(
        (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
        description="Ridge penalties tried (relative "
        "to the Gram matrix's mean "
        "eigenvalue; per-frame readouts "
        "want 1e-6..1e-4, pooled ones "
        "1e-2..10)",
    )
    cv_folds: Annotated[int, Field(ge=2)] = Field(
        5, description="Cross-validation folds over utterance indices (speaker split: one speaker per fold)"
    )
    limit: Annotated[int, Field(ge=2 * N_CLASSES)] | None = Field(
        None, description="Stratified subset of this many utterances, by digit and speaker (none: all)"
    )
    max_batch_samples: PositiveInt = Field(
        64_000_000,
        description="Most drive samples per device call (batch x padded length); bounds memory per call",
    )
    feature_cache_dir: str | None = Field(
        None, description="Feature cache folder (none: no cache; the command line uses RUNS_DIR/.cache)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SpokenDigitsConfig:
        if self.split == "speaker" and not self.test_speaker:
            raise ValueError("the speaker split needs --test-speaker NAME (the speaker held out for testing)")
        if self.split == "standard" and self.test_speaker:
            raise ValueError("--test-speaker only applies to --split speaker")
        FeatureConfig(kind=self.feature_kind)  # validates the kind
        if self.state_normalisation != "none" and not self.segments:
            raise ValueError("--state-normalisation needs pooled states (--segments > 0)")
        if self.augment_vtlp and self.feature_kind == "mfcc":
            raise ValueError("--augment-vtlp warps a frequency axis: use lyon or logmel features, not mfcc")
        Encoder(np.ones((1, 1)), self.theta_s, self.samples_per_node, 1.0, self.input_sigma)
        return self

    @property
    def dt_s(self) -> float:
        return self.theta_s / self.samples_per_node

    @property
    def conditions(self) -> dict[str, float]:
        """The device's operating point: the bias, and the field when one is chosen."""
        return {"bias_A": self.bias_A, **({} if self.field_T is None else {"field_T": self.field_T})}


# --- data selection ---------------------------------------------------------------------------
def split_utterances(
    utterances: Sequence[Utterance], config: SpokenDigitsConfig
) -> tuple[list[Utterance], list[Utterance]]:
    """(train, test) lists for the configured split."""
    if config.split == "standard":
        test = [u for u in utterances if u.index < STANDARD_TEST_INDICES]
        train = [u for u in utterances if u.index >= STANDARD_TEST_INDICES]
    else:
        speakers = sorted({u.speaker for u in utterances})
        if config.test_speaker not in speakers:
            raise ConfigError(
                f"test speaker {config.test_speaker!r} is not in the data; speakers: {speakers}"
            )
        test = [u for u in utterances if u.speaker == config.test_speaker]
        train = [u for u in utterances if u.speaker != config.test_speaker]
    if not train or not test:
        raise ConfigError(
            f"the {config.split} split leaves {len(train)} training and {len(test)} test "
            "utterances; both must be non-empty"
        )
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


def select_data(
    config: SpokenDigitsConfig, rng: np.random.Generator
) -> tuple[list[Utterance], list[Utterance]]:
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


def _features_by_name(
    utterances: Sequence[Utterance],
    feature_config: FeatureConfig,
    config: SpokenDigitsConfig,
    progress: Callable[[int, int], None] | None = None,
    speed: float = 1.0,
    also: Sequence[Utterance] = (),
) -> list[np.ndarray]:
    """Features of ``utterances`` in their order, computed (and cached) for ``utterances`` and
    ``also`` sorted by name: one cache entry serves every split of the same recordings."""
    pool = sorted(set(utterances) | set(also), key=lambda u: u.name)
    feats = dict(
        zip(
            (u.name for u in pool),
            utterance_features(
                pool, feature_config, config.feature_cache_dir, progress=progress, speed=speed
            ),
        )
    )
    return [feats[u.name] for u in utterances]


@dataclass
class Features:
    """Every feature a run uses, in the order of ``train + test``: the features themselves, the
    training set's speed-perturbed copies (one list per ``augment_speeds`` entry) and the MFCCs
    of the pooled reference."""

    raw: list[np.ndarray]
    speeds: list[list[np.ndarray]]
    mfcc: list[np.ndarray]


def extract_features(
    config: SpokenDigitsConfig,
    train: Sequence[Utterance],
    test: Sequence[Utterance],
    phase: Callable[[str], Callable[[int, int], None] | None] = lambda stage: None,
) -> Features:
    """The run's features, read from or written to ``config.feature_cache_dir`` (a benchmark or
    a sweep computes them once; the run then reads them); ``phase(name)`` gives each phase's
    progress callback."""
    feature_config = FeatureConfig(kind=config.feature_kind)
    utterances = [*train, *test]
    return Features(
        _features_by_name(utterances, feature_config, config, phase("features")),
        [
            _features_by_name(
                train, feature_config, config, phase(f"features x{speed:g}"), speed=speed, also=test
            )
            for speed in config.augment_speeds
        ],
        utterance_features(
            utterances, FeatureConfig(kind="mfcc"), config.feature_cache_dir, progress=phase("features mfcc")
        ),
    )


# --- the device part ----------------------------------------------------------------------
#: Fewest drive samples per device call: the simulators' throughput is flat above ~2 M (measured
#: on sim:vortex: 1.2 M samples/s at both 1.9 M and 7.7 M per call).
MIN_BATCH_SAMPLES = 2_000_000


def device_batch_samples(lengths: Sequence[int], config: SpokenDigitsConfig) -> int:
    """Drive samples per device call: about a twentieth of the whole drive, so the device phase
    reports progress every ~5 % (one call is one step), within ``config.max_batch_samples``."""
    return min(config.max_batch_samples, max(MIN_BATCH_SAMPLES, sum(lengths) // 20))


def measure_states(
    ctx: RunContext,
    encoder: Encoder,
    features: Sequence[np.ndarray],
    config: SpokenDigitsConfig,
    after_step: Callable[[], None] = lambda: None,
) -> list[np.ndarray]:
    """Readout inputs of every utterance: the device driven in length-sorted padded batches
    (:func:`~spinlab.speech.encoder.device_states`), each utterance's states pooled by
    ``config.segments`` (the frame states themselves when it is 0).

    Each batch is one recorded step (stream ``device``): its utterances' readout inputs
    (float32, rows of ``device_states/pooled``, or of ``device_states/frames`` with the utterance
    each frame belongs to), so an interrupted run resumes without driving the device again for
    the batches it has. ``after_step()`` is called after each (the run thread's moment to relay
    the progress of work done beside the device).
    """
    lengths = [len(f) * encoder.samples_per_frame() for f in features]
    states: list[np.ndarray | None] = [None] * len(features)
    done = 0
    total = len(features)
    name = "device_states/pooled" if config.segments else "device_states/frames"
    for b, batch_idx in enumerate(length_batches(lengths, device_batch_samples(lengths, config))):

        def drive_batch(device: Device, batch_idx: np.ndarray = batch_idx) -> dict[str, np.ndarray]:
            rows = device_states(
                device,
                encoder,
                [features[i] for i in batch_idx],
                config.conditions,
                config.node_features,
                max_batch_samples=sum(lengths),
                reduce=lambda s: pool_states(s, config.segments),
            )
            return {
                name: np.concatenate(rows),
                "device_states/utterance": np.repeat(batch_idx, [len(r) for r in rows]).astype(np.int32),
            }

        data = ctx.measure(
            "device",
            drive_batch,
            key=f"batch/{b}",
            meta={"utterances": len(batch_idx)},
            attrs={name: {"unit": getattr(ctx.device, "response_unit", "V")}},  # node states: the response's
        )
        owner = data["device_states/utterance"]
        for i in batch_idx:
            states[i] = data[name][owner == i]
        done += len(batch_idx)
        ctx.progress(done, total, stage="device")
        after_step()
    return states  # type: ignore[return-value]


def baseline_inputs(
    encoder: Encoder,
    features: Sequence[np.ndarray],
    segments: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Readout inputs with the device removed, from one pass over the features (no copy of the
    masked features of a whole data set): the masked features (linear, as in Torrejon et al.), the
    node drive values exactly as sent (clipping at +-amplitude included, itself a nonlinearity),
    and the fraction of node inputs clipped."""
    masked, drive = [], []
    clipped = total = 0
    step = max(1, len(features) // 20)
    # one BLAS thread: these products are small, and threads made them 50 ms each instead of
    # 0.1 ms on a busy 2-core machine (measured)
    with threadpool_limits(1, user_api="blas"):
        for i, f in enumerate(features):
            m = encoder.masked(f)
            clipped += int(np.count_nonzero(np.abs(m) >= encoder.scale))
            total += m.size
            masked.append(pool_states(m, segments))
            drive.append(pool_states(np.clip(m / encoder.scale, -1.0, 1.0), segments))
            if progress is not None and ((i + 1) % step == 0 or i + 1 == len(features)):
                progress(i + 1, len(features))
    return masked, drive, clipped / total


# --- readout and scoring ------------------------------------------------------------------
@dataclass
class Evaluation:
    accuracy: float
    frame_accuracy: float
    alpha: float
    cv_scores: dict[float, float]
    predictions: np.ndarray
    readout: RidgeReadout = field(repr=False)


def evaluate(
    train_states: Sequence[np.ndarray],
    train_labels: np.ndarray,
    groups: np.ndarray,
    test_states: Sequence[np.ndarray],
    test_labels: np.ndarray,
    alphas: Sequence[float],
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Choose alpha by CV on the training set, fit on all of it, score the test set
    (``progress(done, total)`` after each fold)."""
    readout, scores = fit_cv(train_states, train_labels, groups, alphas, N_CLASSES, progress)
    alpha = readout.alpha
    predictions = readout.predict(test_states)
    return Evaluation(
        float(np.mean(predictions == test_labels)),
        readout.frame_accuracy(test_states, test_labels),
        alpha,
        scores,
        predictions,
        readout,
    )


@dataclass
class Labelled:
    """Labels of a run's readout inputs: the first ``n_fit`` train (with their CV ``groups``),
    the rest are the test set's (``test``)."""

    fit: np.ndarray
    groups: np.ndarray
    test: np.ndarray
    n_fit: int
    voices: Sequence[str] | None = None  # readout inputs standardised per voice (state normalisation)


@dataclass
class Baselines:
    """The device removed: masked features (linear), node drive as sent, pooled MFCCs."""

    masked: Evaluation
    drive: Evaluation
    mfcc: np.ndarray
    clipped_fraction: float


def without_device(
    encoder: Encoder,
    inputs: Sequence[np.ndarray],
    mfcc: Sequence[np.ndarray],
    labelled: Labelled,
    mfcc_labelled: Labelled,
    config: SpokenDigitsConfig,
    phase: Phase,
) -> Baselines:
    """The baselines, with the readout and CV of the device's result: on the masked features and
    on the drive as sent (the difference to the device result is what the device adds beyond the
    encoding), and the pooled MFCC reference ("what a user would pick instead")."""
    masked, node_inputs, clipped = baseline_inputs(encoder, inputs, config.segments, phase("baseline inputs"))
    if labelled.voices is not None:  # the device states' normalisation, for the baselines alike
        masked, node_inputs = by_voice(masked, labelled.voices), by_voice(node_inputs, labelled.voices)
    n, y, groups = labelled.n_fit, labelled.fit, labelled.groups
    fits = [
        evaluate(x[:n], y, groups, x[n:], labelled.test, config.alphas, phase(stage))
        for x, stage in ((masked, "baseline: no device"), (node_inputs, "baseline: drive only"))
    ]
    report = phase("baseline: pooled MFCC")
    report(0, 1)
    m = mfcc_labelled.n_fit
    predictions = pooled_reference(mfcc[:m], mfcc_labelled.fit, mfcc[m:], mfcc_labelled.groups, config.alphas)
    report(1, 1)
    return Baselines(*fits, predictions, clipped)


#: The baselines every report sets beside the device, by summary key (``comparisons``).
BASELINES = {
    "no_device": ("baseline_accuracy", "no device (masked features, linear)"),
    "drive_only": ("drive_baseline_accuracy", "drive only (node drive as sent, clipped)"),
    "pooled_mfcc": ("mfcc_reference_accuracy", "pooled MFCC (no device)"),
}


def accuracy_statistics(
    labels: np.ndarray, predictions: np.ndarray, baselines: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Summary fields that say how sure the accuracies are: each one's 95 % Wilson interval
    (``<key>_ci95``), and the device against each baseline on the same test utterances
    (``comparisons``: the difference with its interval, McNemar's exact p-value)."""
    correct = predictions == labels
    fields: dict[str, Any] = {"accuracy_ci95": statistics.accuracy(correct)["ci95"]}
    comparisons = {}
    for name, baseline in baselines.items():
        fields[f"{BASELINES[name][0]}_ci95"] = statistics.accuracy(baseline == labels)["ci95"]
        comparisons[name] = statistics.compare(correct, baseline == labels)
    fields["comparisons"] = comparisons
    return fields


def statistics_lines(summary: Mapping[str, Any], indent: str = "") -> list[str]:
    """Each baseline with its interval and the device against it, in words (report text)."""
    n = summary["n_test"]
    lines = []
    for name, (key, what) in BASELINES.items():
        if key not in summary:
            continue
        accuracy = {"accuracy": summary[key], "n_test": n, "ci95": summary[f"{key}_ci95"]}
        comparison = summary["comparisons"][name]
        lines.append(
            f"{indent}{what}: {statistics.describe_accuracy(accuracy)}; "
            f"device {statistics.describe_difference(comparison)}"
        )
    gains = [c for c in summary["comparisons"].values() if c["difference"] > 0]
    if not any(c["significant"] for c in gains):
        lines.append(f"{indent}the device's gain over the baselines is not significant at this test size")
    return lines


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


def plot_confusion(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """Confusion matrix, titled by the accuracy with its test count and the no-device baselines."""
    fig = Figure(figsize=(4.6, 4.3), dpi=120)
    _confusion(fig.subplots(), fig, datasets, results)
    fig.tight_layout()
    return fig


def _confusion(ax: Any, fig: Figure, datasets: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    matrix = np.asarray(datasets["confusion"])
    im = ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > matrix.max() / 2 else "black",
            )
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("spoken digit")
    ax.set_xticks(range(matrix.shape[0]))
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_title(
        f"{device_name(results['device'])}: accuracy {100 * results['accuracy']:.1f} % "
        f"of {int(matrix.sum())} test utterances\n"
        f"no device: linear {100 * results['baseline_accuracy']:.1f} %, "
        f"drive only {100 * results['drive_baseline_accuracy']:.1f} %",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, fraction=0.046)


def record_example(
    ctx: RunContext,
    encoder: Encoder,
    cochleagram: np.ndarray,
    features: np.ndarray,
    utterance: Utterance,
    feature_config: FeatureConfig,
    config: SpokenDigitsConfig,
) -> None:
    """One test utterance for the figure: its cochleagram, the drive the encoder makes of it and
    the device's response, measured as one more step (``example``) after the protocol's own."""
    drive = encoder.drive(features)
    ctx.measure(
        "example",
        lambda device: {
            "example/response_V": device.respond(Waveform(drive, encoder.dt_s, "V"), dict(config.conditions))
            .as_batch()
            .samples[:1]
        },
        key="example",
    )
    ctx.save("example/cochleagram", np.asarray(cochleagram), frame_s=1.0 / feature_config.frame_rate_Hz)
    ctx.save("example/drive_V", Waveform(drive, encoder.dt_s, "V"), utterance=utterance.name)
    ctx.result(example={"utterance": utterance.name, "digit": utterance.digit, "dt_s": encoder.dt_s})


def plot_example(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """One test utterance through the reservoir (cochleagram, drive, device response) beside the
    confusion matrix of the whole test set."""
    example = results["example"]
    coch = np.asarray(datasets["example/cochleagram"], dtype=float)
    drive = np.asarray(datasets["example/drive_V"], dtype=float).reshape(-1)
    response = np.asarray(datasets["example/response_V"], dtype=float).reshape(-1)[: drive.size]
    frame_s = float(getattr(datasets, "attrs", lambda _: {})("example/cochleagram").get("frame_s", 8e-3))
    fig = Figure(figsize=(10.5, 5.2))
    grid = fig.add_gridspec(3, 2, width_ratios=[1.5, 1.0])
    top, middle, bottom = (fig.add_subplot(grid[i, 0]) for i in range(3))
    t_audio, audio_unit = scaled(np.arange(coch.shape[0] + 1) * frame_s, "s")
    top.pcolormesh(t_audio, np.arange(coch.shape[1] + 1), coch.T, cmap="magma", shading="flat")
    top.set_xlabel(label("t_audio", audio_unit))
    top.set_ylabel("cochlear channel")
    top.set_title(f"spoken {example['digit']}: {example['utterance']}", fontsize=9)
    t, t_unit = scaled(np.arange(drive.size) * float(example["dt_s"]), "s")
    d_factor, d_unit = prefix(drive, "V")
    r_factor, r_unit = prefix(response, "V")
    middle.plot(t, drive * d_factor, color="tab:blue", lw=0.4)
    middle.set_ylabel(label("V_drive", d_unit))
    bottom.plot(t[: response.size], response * r_factor, color="k", lw=0.4)
    bottom.set_ylabel(label("V_out", r_unit))
    for ax in (middle, bottom):
        ax.set_xlabel(label("t", t_unit))
        ax.set_xlim(t[0], t[-1])
    _confusion(fig.add_subplot(grid[:, 1]), fig, datasets, results)
    fig.tight_layout()
    return fig


# --- the protocol ----------------------------------------------------------------------------
def run(ctx: RunContext, config: SpokenDigitsConfig) -> dict[str, Any]:
    """The plan body: the whole protocol on ``ctx.device``; returns the summary."""
    t_start = time.perf_counter()
    device = ctx.device
    require_conditions(device, config.conditions)
    train, test = select_data(config, ctx.rng("split"))

    feature_config = FeatureConfig(kind=config.feature_kind)

    def phase(stage: str) -> Callable[[int, int], None]:
        """Progress of one named phase: its first and last step, every 10 %, and at least every
        5 s (so the count of checkpoints does not hang on the machine's speed)."""
        last = [-1.0, -1]

        def report(done: int, total: int) -> None:
            now, tenth = time.perf_counter(), 10 * done // max(total, 1)
            if done in (1, total) or tenth > last[1] or now - last[0] >= 5.0:
                last[:] = [now, tenth]
                ctx.progress(done, total, stage=stage)

        return report

    extracted = extract_features(config, train, test, phase)
    raw = extracted.raw
    voices = VoiceNormaliser(config.normalisation).fit(raw[: len(train)], [u.speaker for u in train])
    normalise = lambda fs, us: voices.transform(fs, [u.speaker for u in us])  # noqa: E731
    normalizer = voices.channel
    features = normalise(raw[: len(train)], train) + normalise(raw[len(train) :], test)
    # augmented copies join the training set only (and its CV group, so a fold never holds a
    # copy of a held-out utterance); they never shape the normaliser or the encoder
    augmented = [f for copy in extracted.speeds for f in normalise(copy, train)]
    if config.augment_vtlp:
        centre, nyquist = channel_frequencies(feature_config), feature_config.rate_Hz / 2
        for alpha in config.augment_vtlp:
            augmented += normalise([vtlp(f, alpha, centre, nyquist) for f in raw[: len(train)]], train)
    mfcc = extracted.mfcc

    amplitude_V = config.drive_fraction * device.limits.max_drive_V
    encoder = Encoder(
        make_mask(config.n_nodes, features[0].shape[1], config.mask_kind, ctx.rng("mask")),
        config.theta_s,
        config.samples_per_node,
        amplitude_V,
        config.input_sigma,
    )
    encoder.fit(features[: len(train)])

    all_features = features[: len(train)] + augmented + features[len(train) :]
    n_fit = len(train) + len(augmented)
    copies = 1 + len(config.augment_speeds) + len(config.augment_vtlp)
    y_fit = np.tile([u.digit for u in train], copies)
    y_test = np.array([u.digit for u in test])
    groups = np.tile(cv_groups(train, config), copies)
    # each voice (and each augmented copy of it, another voice) standardised by its own pooled
    # states; the readout keeps the training voices' pooled statistics for a voice not yet enrolled
    by_voice_of = [f"{u.speaker}/{k}" for k in range(copies) for u in train] + [u.speaker for u in test]
    per_voice = by_voice_of if config.state_normalisation == "speaker" else None
    labelled = Labelled(y_fit, groups, y_test, n_fit, per_voice)
    mfcc_labelled = Labelled(np.array([u.digit for u in train]), cv_groups(train, config), y_test, len(train))

    # The baselines need no device: they are fitted on a thread of their own while it plays.
    # BLAS runs on one thread meanwhile, set here for both threads (its thread count is global:
    # the readout's own one-thread limits then set what is already set).
    with (
        threadpool_limits(1, user_api="blas"),
        Beside(
            ctx, partial(without_device, encoder, all_features, mfcc, labelled, mfcc_labelled, config)
        ) as beside,
    ):
        t_device = time.perf_counter()
        states = measure_states(ctx, encoder, all_features, config, after_step=beside.relay)
        device_s = time.perf_counter() - t_device
        record_example(ctx, encoder, raw[len(train)], features[len(train)], test[0], feature_config, config)
        state_voice = None
        if per_voice is not None:
            state_voice = VoiceStats.of(states[: len(train)], TRAINING_VOICES)
            states = by_voice(states, per_voice)
        result = evaluate(
            states[:n_fit], y_fit, groups, states[n_fit:], y_test, config.alphas, phase("readout")
        )
        baselines = beside.result()
    baseline, drive_baseline, mfcc_predictions = baselines.masked, baselines.drive, baselines.mfcc
    clipped = baselines.clipped_fraction
    mfcc_accuracy = float(np.mean(mfcc_predictions == y_test))
    statistics = accuracy_statistics(
        y_test,
        result.predictions,
        {
            "no_device": baseline.predictions,
            "drive_only": drive_baseline.predictions,
            "pooled_mfcc": mfcc_predictions,
        },
    )

    matrix = confusion_matrix(y_test, result.predictions)
    wall_s = time.perf_counter() - t_start
    summary = {
        "accuracy": result.accuracy,
        "frame_accuracy": result.frame_accuracy,
        "baseline_accuracy": baseline.accuracy,
        "baseline_frame_accuracy": baseline.frame_accuracy,
        "drive_baseline_accuracy": drive_baseline.accuracy,
        "mfcc_reference_accuracy": mfcc_accuracy,
        **statistics,
        "clipped_fraction": clipped,
        "per_speaker": per_speaker_accuracy(test, result.predictions),
        "n_train": len(train),
        "n_augmented": len(augmented),
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
        "field_T": config.field_T,
        "amplitude_V": amplitude_V,
        "device_s": device_s,
        "wall_s": wall_s,
    }
    # the per-frame readout's training frames are too many to store
    if config.segments:
        readout = DigitReadout(
            feature_config,
            normalizer,
            encoder,
            config.node_features,
            config.segments,
            result.readout,
            device.address or type(device).__name__,
            config.conditions,
            training=TrainingStates(
                np.concatenate(states[:n_fit]),
                y_fit,
                np.tile([u.speaker for u in train], copies),
                np.ones(n_fit),
            ),
            provenance={
                "run": ctx.run_id,
                "split": config.split,
                "test_speaker": config.test_speaker,
                "accuracy": result.accuracy,
                "speakers": sorted({u.speaker for u in train}),
            },
            normalisation=config.normalisation,
            voice=voices.training_voices,
            state_voice=state_voice,
        )
        readout.save(ctx.path / READOUT_FILE)
        summary["readout"] = READOUT_FILE  # inside the run directory
    _record(
        ctx,
        config,
        encoder,
        normalizer,
        train,
        test,
        states[: len(train)] + states[n_fit:],
        result,
        baseline,
        drive_baseline,
        mfcc_predictions,
        matrix,
        summary,
    )
    return summary


def _record(
    ctx: RunContext,
    config: SpokenDigitsConfig,
    encoder: Encoder,
    normalizer: ChannelNormalizer,
    train: list[Utterance],
    test: list[Utterance],
    states: list[np.ndarray],
    result: Evaluation,
    baseline: Evaluation,
    drive_baseline: Evaluation,
    mfcc_predictions: np.ndarray,
    matrix: np.ndarray,
    summary: dict,
) -> None:
    names = np.array([u.name for u in train + test], dtype="S")
    frames = np.array([len(s) for s in states])
    ctx.save("utterances", names, n_train=len(train))
    ctx.save("frames_per_utterance", frames)
    ctx.save("mask", encoder.mask, kind=config.mask_kind, seed=ctx.seed, stream="mask")
    ctx.save(
        "encoder_scale",
        np.array(encoder.scale),
        amplitude_V=encoder.amplitude_V,
        input_sigma=encoder.input_sigma,
        theta_s=encoder.theta_s,
        samples_per_node=encoder.samples_per_node,
    )
    ctx.save("feature_mean", normalizer.mean)
    ctx.save("feature_std", normalizer.std)
    # The class decision is linear in the pooled states, or in the states summed over frames
    # (per-frame readout), so these reproduce it.
    ctx.save(
        "states_pooled" if config.segments else "states_summed", np.stack([s.sum(axis=0) for s in states])
    )
    ctx.save("readout_weights", result.readout.weights, alpha=result.alpha)
    ctx.save("readout_state_mean", result.readout.mean)
    ctx.save("readout_state_std", result.readout.std)
    ctx.save("baseline_readout_weights", baseline.readout.weights, alpha=baseline.alpha)
    ctx.save("test_labels", np.array([u.digit for u in test]))
    ctx.save("predictions", result.predictions)
    ctx.save("baseline_predictions", baseline.predictions)
    ctx.save("drive_baseline_predictions", drive_baseline.predictions)
    ctx.save("mfcc_reference_predictions", mfcc_predictions)
    ctx.save("confusion", matrix)
    ctx.save("cv_scores", np.array([[a, s] for a, s in result.cv_scores.items()]))
    ctx.result(**summary)


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run spoken-digits`` prints."""
    device = {"accuracy": summary["accuracy"], "n_test": summary["n_test"], "ci95": summary["accuracy_ci95"]}
    lines = [
        f"accuracy {statistics.describe_accuracy(device)} test utterances (95 % interval; "
        f"frame vote {100 * summary['frame_accuracy']:.1f} %), {summary['n_train']} train, "
        f"{summary['wall_s']:.1f} s ({summary['device_s']:.1f} s device)"
    ]
    lines += [f"  {speaker:<12} {100 * acc:5.1f} %" for speaker, acc in summary["per_speaker"].items()]
    lines += statistics_lines(summary)
    lines.append(f"run: {summary['run_dir']}")
    if summary.get("readout"):
        lines.append(
            f"readout saved: `spinlab listen --device {summary['device']} --readout {summary['run_dir']}`"
        )
    return "\n".join(lines)


def with_fsdd(config: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` with ``data_dir`` found by :func:`~spinlab.speech.audio.find_fsdd` when
    neither they nor ``config`` name one (the run file records the folder used)."""
    from spinlab.speech.audio import find_fsdd

    given = overrides.get("data_dir")
    if given is None:
        given = config.get("data_dir") if isinstance(config, Mapping) else getattr(config, "data_dir", None)
    return dict(overrides) if given else {**overrides, "data_dir": str(find_fsdd())}


def command_line_defaults(
    settings: dict[str, Any], *, device: str | None, runs_dir: Any, options: Mapping[str, Any]
) -> dict[str, Any]:
    """On the command line FSDD is found on this machine (``$SPINLAB_FSDD``, else the fetch cache)
    and features are cached under the runs directory."""
    from pathlib import Path

    from spinlab.speech.audio import find_fsdd

    settings["data_dir"] = str(find_fsdd(settings.get("data_dir"), setting="--data"))
    settings.setdefault("feature_cache_dir", str(Path(runs_dir) / ".cache"))
    return settings


@command(
    config=SpokenDigitsConfig,
    report=report,
    prepare=command_line_defaults,
    help="Spoken-digit recognition with the device as a time-multiplexed reservoir (FSDD).",
    aliases={"--data": "data_dir", "--nodes": "n_nodes", "--mask": "mask_kind", "--features": "feature_kind"},
)
def plan(config: SpokenDigitsConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """The spoken-digit protocol as a plan (``spinlab run spoken-digits``'s defaults unless
    overridden; without ``data_dir``, FSDD is found as on the command line: ``$SPINLAB_FSDD``,
    else the `spinlab data fetch fsdd` copy)."""
    cfg = make_config(SpokenDigitsConfig, config, with_fsdd(config, overrides))
    return Plan(
        "spoken-digits",
        cfg,
        lambda ctx: run(ctx, cfg),
        plots={"confusion.png": plot_confusion, "example.png": plot_example},
        nexus={"signal": "confusion"},
    )
