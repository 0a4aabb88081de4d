import numpy as np
import pytest

from spinlab import Waveform, WaveformError


def test_rejects_nan_and_inf_with_position():
    samples = np.zeros(10)
    samples[3] = np.nan
    with pytest.raises(WaveformError, match="non-finite.*index 3"):
        Waveform(samples, 1e-9)
    with pytest.raises(WaveformError, match="non-finite"):
        Waveform([0.0, np.inf], 1e-9)


@pytest.mark.parametrize("dt", [0.0, -1e-9, np.nan, np.inf])
def test_rejects_bad_sample_interval(dt):
    with pytest.raises(WaveformError, match="dt_s"):
        Waveform(np.zeros(4), dt)


@pytest.mark.parametrize("shape", [(), (0,), (2, 3, 4)])
def test_rejects_bad_shapes(shape):
    with pytest.raises(WaveformError):
        Waveform(np.zeros(shape), 1e-9)


def test_rejects_non_numeric():
    with pytest.raises(WaveformError, match="real numbers"):
        Waveform(np.array(["a", "b"]), 1e-9)


def test_integer_samples_become_float():
    wf = Waveform(np.arange(5), 1e-9)
    assert wf.samples.dtype == np.float64


def test_time_axis_and_duration():
    wf = Waveform(np.zeros(4), 2e-9, t0_s=1e-9)
    np.testing.assert_allclose(wf.time_s(), [1e-9, 3e-9, 5e-9, 7e-9])
    assert wf.duration_s == pytest.approx(8e-9)
    assert wf.sample_rate_Hz == pytest.approx(5e8)


def test_split_and_concatenate_round_trip_keeps_time_base():
    wf = Waveform(np.arange(10.0), 1e-9, t0_s=5e-9)
    pieces = wf.split(4)
    assert [p.n for p in pieces] == [4, 4, 2]
    assert pieces[1].t0_s == pytest.approx(9e-9)
    joined = Waveform.concatenate(pieces)
    np.testing.assert_array_equal(joined.samples, wf.samples)
    assert joined.t0_s == wf.t0_s


def test_concatenate_refuses_mismatched_time_base():
    with pytest.raises(WaveformError, match="dt_s or unit"):
        Waveform.concatenate([Waveform(np.zeros(2), 1e-9), Waveform(np.zeros(2), 2e-9)])


def test_batch_helpers():
    wf = Waveform(np.arange(6.0).reshape(2, 3), 1e-9)
    assert wf.batched and wf.batch_size == 2 and wf.n == 3
    np.testing.assert_array_equal(wf.item(1).samples, [3.0, 4.0, 5.0])
    single = Waveform(np.arange(3.0), 1e-9)
    assert single.as_batch().samples.shape == (1, 3)


def test_a_sample_interval_that_is_not_a_number_is_a_waveform_error():
    with pytest.raises(WaveformError, match="number of seconds"):
        Waveform(np.zeros(3), "1e-9 s")
