"""The speech pipeline's package: old import paths still work, and the MFCC reference's
classifier (analysis, over plain arrays) separates what a linear model can."""

from __future__ import annotations

import numpy as np

from spinlab.analysis.reference import pooled_reference


def test_the_old_import_paths_reach_the_moved_modules() -> None:
    import spinlab.audio
    import spinlab.live
    import spinlab.readout
    from spinlab.speech import audio, microphone, readout, readout_file

    assert spinlab.audio.list_fsdd is audio.list_fsdd
    assert spinlab.live.Microphone is microphone.Microphone
    assert spinlab.readout.load_readout is readout.load_readout
    assert spinlab.readout.FILE_NAME == readout_file.FILE_NAME == "readout.h5"


def test_pooled_reference_tells_sequences_apart_by_their_mean_and_spread() -> None:
    rng = np.random.default_rng(0)

    def sequences(n: int) -> tuple[list[np.ndarray], np.ndarray]:
        labels = np.arange(n) % 3
        # class 0: low mean; class 1: high mean; class 2: low mean, wide spread
        return [
            rng.normal(2.0 * (c == 1), 1.0 + 3.0 * (c == 2), size=(rng.integers(5, 30), 4)) for c in labels
        ], labels

    train, labels = sequences(60)
    test, truth = sequences(30)
    groups = np.arange(60) % 5
    predictions = pooled_reference(train, labels, test, groups, alphas=(1e-3, 1e-1, 10.0))
    assert predictions.shape == (30,)
    assert np.mean(predictions == truth) > 0.9
