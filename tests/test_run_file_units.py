"""Run files a stranger can read (issue 24, item 9): every numeric dataset carries its unit, time
series their ``dt_s``, names are identifiers, and files written before still open."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from spinlab.engine import Plan, RunEngine
from spinlab.engine.plots import RunDatasets
from spinlab.engine.runfile import check_name, unit_of
from spinlab.errors import ConfigError
from spinlab.protocols import twin_eval
from spinlab.twin.checkpoint import TwinMeta, save_twin
from spinlab.twin.model import TwinArchitecture, build_model
from spinlab.twin.trajectory import Trajectory, fit_normalisation


def _datasets(path):
    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = dict(obj.attrs)

    with h5py.File(path) as f:
        f.visititems(visit)
    return found


def test_units_come_from_the_plan_else_the_name_else_dimensionless():
    assert unit_of("eval/condition_0/device_mean_V") == "V"
    assert unit_of("sweep/bias_A") == "A" and unit_of("relaxation_time_s") == "s"
    assert unit_of("test/prediction", {"unit": "T"}) == "T"
    assert unit_of("confusion") == "1" and unit_of("_V") == "1"
    assert check_name("eval/condition_0/shots_V") == "eval/condition_0/shots_V"
    with pytest.raises(ConfigError, match=r"'eval/bias_A=0.00592/twin_V'.*identifier"):
        check_name("eval/bias_A=0.00592/twin_V")


def test_a_plan_saving_a_name_that_is_no_identifier_is_refused_in_one_line(tmp_path):
    plan = Plan("bad-name", {}, lambda ctx: ctx.save("eval/bias_A=0.1/x_V", np.zeros(3)), needs_device=False)
    with pytest.raises(ConfigError, match="identifier"):
        RunEngine(tmp_path).run(plan, None)


@pytest.mark.usefixtures("one_torch_thread")
def test_twin_eval_run_file_has_units_dt_and_identifier_names_and_old_files_still_plot(tmp_path):
    dt_s = 1e-7
    rng = np.random.default_rng(0)
    trajs = [
        Trajectory(rng.normal(size=200), rng.normal(size=200) * 0.01, dt_s, {"bias_A": b})
        for b in (5.5e-3, 6.5e-3)
    ]
    arch = TwinArchitecture(hidden=4, condition_names=("bias_A",), interpolation="hold")
    model = build_model(arch, fit_normalisation(trajs, ("bias_A",)), seed=0)
    checkpoint = save_twin(
        tmp_path / "twin.pt", model, TwinMeta(dt_s=dt_s, condition_ranges={"bias_A": [5.5e-3, 6.5e-3]})
    )
    plan = twin_eval.plan(
        checkpoint=str(checkpoint),
        n_drives=2,
        record_s=2e-5,
        dt_s=dt_s,
        conditions={"bias_A": [5.92e-3, 6.1e-3]},
        repeats=2,
    )
    result = RunEngine(tmp_path / "runs").run(plan, "sim:vortex", seed=1)
    found = _datasets(result.path / "run.h5")
    numeric = {n: a for n, a in found.items() if not n.startswith("engine/") and "labels" not in n}
    assert result.status == "completed", result.summary
    numeric.pop("eval/tags")
    assert all(a.get("unit") for a in numeric.values()), {n: a.get("unit") for n, a in numeric.items()}
    for name in ("shots_V", "device_mean_V", "device_shot_V", "twin_V", "drive_V"):
        attrs = found[f"eval/condition_1/{name}"]
        assert attrs["unit"] == "V" and attrs["dt_s"] == dt_s and attrs["bias_A"] == pytest.approx(6.1e-3)
    assert all(check_name(name) for name in found)
    assert (result.path / "twin_vs_device.png").is_file()

    # a run file from before: groups named by their conditions, no labels; it still plots
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        for kind in ("drive_V", "device_shot_V", "device_mean_V", "twin_V"):
            f[f"eval/bias_A=0.00592/{kind}"] = np.zeros((1, 50))
        f["eval/tags"] = np.array([b"bias_A=0.00592"])
    with h5py.File(old) as f:
        fig = twin_eval.plot_examples(RunDatasets(f), {"dt_s": dt_s, "nrmse": 0.1, "repeats": 1})
    assert fig.axes[0].get_title() == "I = 5.92 mA"  # its conditions read from the old group name
