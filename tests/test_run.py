import json

import h5py
import numpy as np
import pytest

from spinlab import RunAborted, Waveform
from spinlab.run import Run


def test_completed_run_file_holds_config_data_results_and_versions(tmp_path):
    with Run("demo", {"n": 3}, root=tmp_path) as run:
        run.record_seed("mask", 7)
        run.save("drive", Waveform(np.arange(4.0), 1e-9))
        run.append("rows", np.ones((2, 3)))
        run.append("rows", np.zeros((1, 3)))
        run.result(accuracy=0.5)
    with h5py.File(run.path / "run.h5") as f:
        assert f.attrs["status"] == "completed"
        assert json.loads(f.attrs["config"]) == {"n": 3}
        assert json.loads(f.attrs["seeds"]) == {"mask": 7}
        assert json.loads(f.attrs["results"]) == {"accuracy": 0.5}
        assert "numpy" in json.loads(f.attrs["versions"])
        assert f["drive"].attrs["dt_s"] == 1e-9
        assert f["rows"].shape == (3, 3)


@pytest.mark.parametrize("exc, status", [(RunAborted("remote abort"), "aborted"),
                                         (KeyboardInterrupt(), "aborted"),
                                         (RuntimeError("boom"), "failed")])
def test_interrupted_run_keeps_its_data_and_says_why(tmp_path, exc, status):
    with pytest.raises(type(exc)):
        with Run("demo", {}, root=tmp_path) as run:
            run.append("rows", np.ones((2, 2)))
            raise exc
    with h5py.File(run.path / "run.h5") as f:
        assert f.attrs["status"] == status
        assert f["rows"].shape == (2, 2)


def test_refuses_to_write_nan(tmp_path):
    with Run("demo", {}, root=tmp_path) as run:
        with pytest.raises(ValueError, match="non-finite"):
            run.save("x", np.array([1.0, np.nan]))
        with pytest.raises(ValueError, match="non-finite"):
            run.append("y", np.array([[np.inf]]))
