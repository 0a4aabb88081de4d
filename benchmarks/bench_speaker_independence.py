"""Spoken digits for voices the readout never heard: leave-one-speaker-out, enrolment, standard split.

    python benchmarks/bench_speaker_independence.py                      # sim:vortex, all five speakers
    python benchmarks/bench_speaker_independence.py --speakers lucas --no-standard

For each FSDD speaker in turn, `spinlab run spoken-digits --split speaker` trains on the other
speakers (settings inside are chosen by speaker-grouped CV over the training speakers only) and
scores the held-out one, next to the no-device baselines and the pooled-MFCC reference of the
same run. The saved readout is then enrolled with that speaker's utterances 5-9 (5 per digit)
and scored on utterances 10-49 (enrolment re-uses the stored training states; only the 50 new
utterances go through the device). Prints one JSON line per speaker, one for the standard split
and a summary line ``{"metric": "speaker_independence", "loso_mean": ..., "mfcc_reference_mean":
..., "enrolled_mean": ..., "standard_accuracy": ...}`` (targets, issue 23: LOSO mean >= 0.85, no
speaker below 0.70, enrolled >= 0.95, standard >= 0.99) and which of them are met. The runs use
the protocol's default per-speaker feature normalisation (``--normalisation channel`` for the
older one); ``--state-normalisation speaker`` and ``--augment-vtlp 0.9 1.1`` add those levers. A
speaker-normalised readout is enrolled with the new voice's statistics taken from its 50
enrolment words.

``--runs-dir DIR`` keeps the run files; ``--from-runs DIR`` then chooses the state-level lever
(each voice's pooled device states standardised by its own statistics) by nested LOSO on those
runs' device states, without driving the device again.

``--screen`` measures the levers for unseen voices without the device (features cached, states
replaced by the pooled features or by the clipped node drive of a smaller mask): for every
held-out speaker, every lever setting of the grid is scored by speaker-grouped CV over the four
training speakers (the penalty too), the best one is fitted on them and scores the held-out
speaker. One JSON line per (speaker, setting) with its inner CV score and its held-out accuracy
(information only: the choice sees the CV score alone), one per speaker for the chosen setting,
and a summary with the nested LOSO mean and each lever's effect (the mean held-out accuracy over
the settings with each value of each lever).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from spinlab import open_device  # noqa: E402
from spinlab.engine import RunEngine  # noqa: E402
from spinlab.protocols import spoken_digits  # noqa: E402
from spinlab.speech.audio import list_fsdd  # noqa: E402
from spinlab.speech.normalise import by_voice  # noqa: E402
from spinlab.speech.readout import load_readout  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "datasets" / "fsdd" / "recordings"
BASELINES = ("baseline_accuracy", "drive_baseline_accuracy", "mfcc_reference_accuracy")
#: Issue 23's targets (enrolled: the held-out voice after enrolling its utterances 5-9).
TARGETS = {"loso_mean": 0.85, "loso_min": 0.70, "enrolled_mean": 0.95, "standard_accuracy": 0.99}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="sim:vortex", help="device address (default sim:vortex)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="FSDD recordings folder")
    parser.add_argument(
        "--speakers", default=None, help="comma-separated speakers to hold out (default: all)"
    )
    parser.add_argument("--cache", default=str(ROOT / "runs" / ".cache"), help="feature cache folder")
    parser.add_argument(
        "--runs-dir", default=None, help="keep the run files here (default: a temporary folder)"
    )
    parser.add_argument("--no-standard", action="store_true", help="skip the standard-split run")
    parser.add_argument("--no-loso", action="store_true", help="only the standard-split run")
    parser.add_argument(
        "--normalisation",
        default="speaker",
        choices=("channel", "speaker", "utterance"),
        help="runs' feature normalisation",
    )
    parser.add_argument(
        "--state-normalisation",
        default="none",
        choices=("none", "speaker"),
        help="runs' normalisation of the pooled device states",
    )
    parser.add_argument(
        "--augment-vtlp", type=float, nargs="*", default=[], help="VTLP factors of training copies"
    )
    parser.add_argument("--limit", type=int, default=None, help="stratified subset of each run")
    parser.add_argument("--screen", action="store_true", help="screen the levers on the no-device path")
    parser.add_argument(
        "--represent",
        default="drive",
        choices=("features", "drive"),
        help="screen's states: pooled features, or the pooled clipped drive of a smaller mask",
    )
    parser.add_argument("--nodes", type=int, default=200, help="screen's mask nodes (drive)")
    parser.add_argument(
        "--voice-words",
        type=int,
        default=0,
        help="screen: the held-out voice's statistics (speaker normalisation) from this many of its "
        "words, unlabelled (default 0: all of them)",
    )
    parser.add_argument("--grid", default="full", choices=tuple(SCREEN_GRIDS), help="screen's lever grid")
    parser.add_argument(
        "--from-runs",
        default=None,
        help="choose the state levers (per-voice state normalisation) by nested LOSO on the device "
        "states of the LOSO runs kept under this folder (--runs-dir of an earlier call): no device",
    )
    args = parser.parse_args(argv)
    if args.screen:
        return screen(args)
    if args.from_runs:
        return from_runs(Path(args.from_runs), args.speakers.split(",") if args.speakers else None)
    levers = {
        "normalisation": args.normalisation,
        "state_normalisation": args.state_normalisation,
        "augment_vtlp": tuple(args.augment_vtlp),
    }
    levers.update({"limit": args.limit} if args.limit else {})

    utterances = list_fsdd(args.data)
    speakers = args.speakers.split(",") if args.speakers else sorted({u.speaker for u in utterances})
    speakers = [] if args.no_loso else speakers
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.runs_dir or scratch
        for speaker in speakers:
            plan = spoken_digits.plan(
                data_dir=args.data,
                split="speaker",
                test_speaker=speaker,
                feature_cache_dir=args.cache,
                **levers,
            )
            summary, run_dir = _run(args.device, plan, Path(tmp))
            enrolled = None  # the saved readout normalises by channel only
            if summary.get("readout"):
                enrolled = _enrolled_accuracy(
                    args.device, run_dir, [u for u in utterances if u.speaker == speaker]
                )
            row = {
                "metric": "loso",
                "device": args.device,
                "speaker": speaker,
                "accuracy": summary["accuracy"],
                **{k: summary[k] for k in BASELINES},
                "enrolled_accuracy": enrolled,
                "alpha": summary["alpha"],
                **levers,
                "wall_s": summary["wall_s"],
            }
            rows.append(row)
            _emit(row)
        standard = None
        if not args.no_standard:
            plan = spoken_digits.plan(data_dir=args.data, feature_cache_dir=args.cache, **levers)
            summary, _ = _run(args.device, plan, Path(tmp))
            standard = summary["accuracy"]
            _emit(
                {
                    "metric": "standard_split",
                    "device": args.device,
                    "accuracy": standard,
                    **{k: summary[k] for k in BASELINES},
                    "wall_s": summary["wall_s"],
                }
            )
    mean = lambda key: (  # noqa: E731
        float(np.mean([r[key] for r in rows])) if rows and None not in [r[key] for r in rows] else None
    )
    found = {
        "loso_mean": mean("accuracy"),
        "loso_min": min((r["accuracy"] for r in rows), default=None),
        "enrolled_mean": mean("enrolled_accuracy"),
        "standard_accuracy": standard,
    }
    _emit(
        {
            "metric": "speaker_independence",
            "device": args.device,
            "speakers": speakers,
            "loso_mean": mean("accuracy"),
            "mfcc_reference_mean": mean("mfcc_reference_accuracy"),
            "baseline_mean": mean("baseline_accuracy"),
            "drive_baseline_mean": mean("drive_baseline_accuracy"),
            "enrolled_mean": mean("enrolled_accuracy"),
            "standard_accuracy": standard,
            "loso_min": min((r["accuracy"] for r in rows), default=None),
            "levers": levers,
            "targets": TARGETS,
            "met": {k: None if found[k] is None else found[k] >= t for k, t in TARGETS.items()},
        }
    )


# --- the no-device screen of the levers ------------------------------------------------------
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
#: Lever grids: normalisation, VTLP factors, speed copies, pooling segments, per-utterance state
#: standardisation. "full" crosses the choices that screening kept in play.
SCREEN_GRIDS = {
    "full": {
        "normalisation": ("channel", "speaker", "utterance"),
        "vtlp": ((), (0.9, 1.1), (0.9, 0.95, 1.05, 1.1)),
        "speeds": ((), (0.9, 1.1)),
        "segments": (3,),
        "state_norm": (False,),
    },
    "no-speeds": {
        "normalisation": ("channel", "speaker", "utterance"),
        "vtlp": ((), (0.9, 1.1), (0.9, 0.95, 1.05, 1.1)),
        "speeds": ((),),
        "segments": (3,),
        "state_norm": (False,),
    },
    "drive": {
        "normalisation": ("channel", "speaker"),
        "vtlp": ((), (0.9, 1.1)),
        "speeds": ((0.9, 1.1),),
        "segments": (3,),
        "state_norm": (False,),
    },
    "small": {
        "normalisation": ("channel", "utterance"),
        "vtlp": ((), (0.9, 1.1)),
        "speeds": ((0.9, 1.1),),
        "segments": (3,),
        "state_norm": (False,),
    },
    "readout": {
        "normalisation": ("speaker",),
        "vtlp": ((),),
        "speeds": ((0.9, 1.1),),
        "segments": (3, 5),
        "state_norm": (False, True),
    },
    # state_norm "speaker": each voice's pooled states standardised by that voice's own (unlabelled)
    # statistics; delta: the pooled frame-to-frame differences of the states beside them
    "states": {
        "normalisation": ("speaker",),
        "vtlp": ((),),
        "speeds": ((0.9, 1.1), (0.8, 0.9, 1.1, 1.2)),
        "segments": (3,),
        "state_norm": (False, "speaker"),
        "delta": (False, True),
    },
    "states-short": {
        "normalisation": ("speaker",),
        "vtlp": ((),),
        "speeds": ((0.9, 1.1),),
        "segments": (3,),
        "state_norm": (False, "speaker"),
        "delta": (False, True),
    },
}


def screen(args) -> None:
    """Nested LOSO over the lever grid on the no-device path (see the module's docstring)."""
    import itertools

    from spinlab.speech.augment import channel_frequencies, vtlp
    from spinlab.speech.encoder import make_mask, pool_states
    from spinlab.speech.features import FeatureConfig, utterance_features
    from spinlab.speech.normalise import VoiceNormaliser

    grid = SCREEN_GRIDS[args.grid]
    names = list(grid)
    settings = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
    config = FeatureConfig()
    utterances = sorted(list_fsdd(args.data), key=lambda u: u.name)
    speeds = sorted({s for setting in settings for s in setting["speeds"]} | {1.0})
    raw = {s: utterance_features(utterances, config, args.cache, speed=s) for s in speeds}
    centre, nyquist = channel_frequencies(config), config.rate_Hz / 2
    mask = make_mask(args.nodes, centre.size, "binary", 0)
    variants = {("speed", s): raw[s] for s in speeds}
    for a in sorted({a for setting in settings for a in setting["vtlp"]}):
        variants[("vtlp", a)] = [vtlp(f, a, centre, nyquist) for f in raw[1.0]]
    speaker_of = np.array([u.speaker for u in utterances])
    digits = np.array([u.digit for u in utterances])
    held_out = args.speakers.split(",") if args.speakers else sorted(set(speaker_of))
    t0 = time.perf_counter()
    chosen_rows, table = [], []
    for speaker in held_out:
        train = np.flatnonzero(speaker_of != speaker)
        test = np.flatnonzero(speaker_of == speaker)
        best = None
        memo: dict = {}

        def pooled(kind, variant, segments, state_norm, delta, which, memo=memo, train=train, test=test):
            """Pooled states of one variant of the training (or test) utterances, normalised by
            ``kind`` fitted on the original training utterances; computed once per fold."""
            key = (kind, variant, segments, state_norm, delta, which)
            if key not in memo:
                if (kind, "fit") not in memo:
                    norm = VoiceNormaliser(kind).fit([raw[1.0][i] for i in train], speaker_of[train])
                    fit_feats = norm.transform([raw[1.0][i] for i in train], speaker_of[train])
                    scale = 1.75 * float(np.concatenate([f @ mask.T for f in fit_feats]).std())
                    memo[(kind, "fit")] = norm, None if args.represent == "features" else scale
                norm, scale = memo[(kind, "fit")]
                rows = train if which == "train" else test
                voices = None
                if which == "test" and args.voice_words:
                    voices = np.zeros(len(rows), bool)
                    voices[np.random.default_rng(0).choice(len(rows), args.voice_words, replace=False)] = True
                feats = norm.transform([variants[variant][i] for i in rows], speaker_of[rows], voices)
                out = []
                for f in feats:
                    x = f if scale is None else np.clip((f @ mask.T) / scale, -1.0, 1.0)
                    p = pool_states(x, segments)
                    if delta:
                        p = np.hstack([p, pool_states(np.diff(x, axis=0, prepend=x[:1]), segments)])
                    out.append((p - p.mean()) / p.std() if state_norm is True else p)
                states = np.concatenate(out)
                if state_norm == "speaker":
                    own = np.ones(len(rows), bool) if voices is None else voices
                    for v in np.unique(speaker_of[rows]):
                        mine = speaker_of[rows] == v
                        mean, std = states[mine & own].mean(axis=0), states[mine & own].std(axis=0)
                        states[mine] = (states[mine] - mean) / np.where(std > 0, std, 1.0)
                memo[key] = states
            return memo[key]

        for setting in settings:
            parts = [("speed", 1.0)]
            parts += [("speed", s) for s in setting["speeds"]] + [("vtlp", a) for a in setting["vtlp"]]
            how = (
                setting["normalisation"],
                setting["segments"],
                setting["state_norm"],
                setting.get("delta", False),
            )
            copies = [pooled(how[0], v, *how[1:], "train") for v in parts]
            x_fit = np.concatenate(copies)
            y_fit = np.tile(digits[train], len(copies))
            groups = np.tile(speaker_of[train], len(copies))
            original = np.arange(len(y_fit)) < len(train)
            alpha, cv = _grouped_cv(x_fit, y_fit, groups, original)
            path, mean, std = _ridge_path(x_fit, y_fit, (alpha,))
            weights = path[alpha]
            x_test = (pooled(how[0], ("speed", 1.0), *how[1:], "test") - mean) / std
            predictions = np.argmax(_bias(x_test) @ weights, axis=1)
            accuracy = float(np.mean(predictions == digits[test]))
            row = {
                "metric": "screen",
                "speaker": speaker,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()},
                "cv_accuracy": cv,
                "alpha": alpha,
                "accuracy": accuracy,
            }
            table.append(row)
            _emit(row)
            if best is None or row["cv_accuracy"] > best["cv_accuracy"]:
                best = row
        chosen_rows.append(best)
        _emit({**best, "metric": "loso_chosen"})
    effects = {}
    for k in names:
        for v in grid[k]:
            v = list(v) if isinstance(v, tuple) else v
            with_v = [r["accuracy"] for r in table if r[k] == v]
            effects[f"{k}={v}"] = float(np.mean(with_v))
    acc = [r["accuracy"] for r in chosen_rows]
    _emit(
        {
            "metric": "speaker_independence_screen",
            "represent": args.represent,
            "nodes": args.nodes if args.represent == "drive" else None,
            "grid": args.grid,
            "voice_words": args.voice_words or "all",
            "loso_mean": float(np.mean(acc)),
            "loso_min": float(np.min(acc)),
            "per_speaker": {r["speaker"]: r["accuracy"] for r in chosen_rows},
            "mean_accuracy_by_lever": effects,
            "wall_s": time.perf_counter() - t0,
        }
    )


def from_runs(folder: Path, speakers: list[str] | None = None) -> None:
    """Nested LOSO of the state normalisation on the device states of finished LOSO runs: for
    each held-out speaker, none vs per-voice standardisation of the pooled states (each training
    voice, and each augmented copy of it, by its own statistics; the held-out voice by its own),
    with the penalty, chosen by leave-one-training-speaker-out CV; the choice scores the held-out
    speaker. The device is not driven again: the states are the runs' own."""
    import h5py

    chosen = {}
    for file in sorted(folder.glob("**/readout.h5")):
        readout = load_readout(file)
        with h5py.File(file.parent / "run.h5", "r") as f:
            config = json.loads(f.attrs["config"])
            results = json.loads(f.attrs["results"])
            n_train = int(f["utterances"].attrs["n_train"])
            names = [n.decode() for n in f["utterances"][()]]
            x_test = np.asarray(f["states_pooled"][n_train:], dtype=np.float64)
            y_test = np.asarray(f["test_labels"][()])
        speaker = config.get("test_speaker") or "standard"
        if speakers and speaker not in speakers:
            continue
        t = readout.training
        x, y, voices = t.states.astype(np.float64), t.labels, t.speakers
        copy = np.arange(len(y)) // n_train  # 0: the original words, k: the k-th augmented copy
        original = copy == 0
        # CV folds: the training speakers (LOSO), or utterance index mod 5 (the standard split)
        groups = (
            voices
            if speaker != "standard"
            else np.array([int(Path(n).stem.rsplit("_", 1)[1]) % 5 for n in names])[
                np.arange(len(y)) % n_train
            ]
        )
        test_voices = np.array([n.split("_")[1] for n in names[n_train:]])
        best = None
        for state_norm in ("none", "speaker"):
            if state_norm == "speaker":
                xs = np.stack(by_voice(list(x), list(np.char.add(voices.astype(str), copy.astype(str)))))
                xt = np.stack(by_voice(list(x_test), list(test_voices)))
            else:
                xs, xt = x, x_test
            alpha, cv = _grouped_cv(xs, y, groups, original)
            path, mean, std = _ridge_path(xs, y, (alpha,))
            accuracy = float(np.mean(np.argmax(_bias((xt - mean) / std) @ path[alpha], axis=1) == y_test))
            row = {
                "metric": "device_states",
                "speaker": speaker,
                "state_norm": state_norm,
                "cv_accuracy": cv,
                "alpha": alpha,
                "accuracy": accuracy,
                "protocol_accuracy": results["accuracy"],
            }
            _emit(row)
            if best is None or cv > best["cv_accuracy"]:
                best = row
        _emit({**best, "metric": "loso_chosen" if speaker != "standard" else "standard_chosen"})
        if speaker != "standard":
            chosen[speaker] = best
    acc = [r["accuracy"] for r in chosen.values()]
    _emit(
        {
            "metric": "speaker_independence_states",
            "loso_mean": float(np.mean(acc)) if acc else None,
            "loso_min": float(np.min(acc)) if acc else None,
            "per_speaker": {s: r["accuracy"] for s, r in chosen.items()},
            "chosen": {s: r["state_norm"] for s, r in chosen.items()},
        }
    )


def _bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas=ALPHAS):
    """Ridge weights for every penalty from one eigendecomposition: standardised rows with a bias
    column, penalty ``alpha`` times the Gram's mean eigenvalue (as in
    :class:`~spinlab.analysis.ridge.RidgeReadout`). Returns ``({alpha: W}, mean, std)``."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    design = _bias((x - mean) / std)
    values, vectors = np.linalg.eigh(design.T @ design)
    projected = vectors.T @ (design.T @ np.eye(10)[y])
    scale = values.sum() / len(values)
    weights = {a: vectors @ (projected / (values + a * scale)[:, None]) for a in alphas}
    return weights, mean, std


def _grouped_cv(x: np.ndarray, y: np.ndarray, groups: np.ndarray, original: np.ndarray):
    """Penalty by leave-one-group-out, scored on the held-out group's original utterances only
    (augmented copies train, never score). Ties go to the larger penalty."""
    hits = dict.fromkeys(ALPHAS, 0)
    for g in np.unique(groups):
        fold = groups != g
        path, mean, std = _ridge_path(x[fold], y[fold])
        held = ~fold & original
        design = _bias((x[held] - mean) / std)
        for a, w in path.items():
            hits[a] += int(np.sum(np.argmax(design @ w, axis=1) == y[held]))
    scores = {a: h / int(original.sum()) for a, h in hits.items()}
    best = max(sorted(scores, reverse=True), key=lambda a: scores[a])
    return best, scores[best]


def _run(address: str, plan, root: Path) -> tuple[dict, Path]:
    t0 = time.perf_counter()
    result = RunEngine(root / "runs").run(plan, address)
    return {**result.summary, "wall_s": time.perf_counter() - t0}, result.path


def _enrolled_accuracy(address: str, run_dir: Path, own: list) -> float:
    """Enrol utterances 5-9 of the held-out speaker, score 10-49."""
    readout = load_readout(run_dir)
    enrol = [u for u in own if 5 <= u.index <= 9]
    test = [u for u in own if u.index >= 10]
    with open_device(address) as device:
        adapted = readout.enrol(
            device, [u.load() for u in enrol], [u.digit for u in enrol], speaker=own[0].speaker
        )
        hits = [r.index == u.digit for r, u in zip(adapted.recognise(device, [u.load() for u in test]), test)]
    return float(np.mean(hits))


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
