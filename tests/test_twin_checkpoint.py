"""Twin checkpoints: round trip, and every flavour of bad file raises CheckpointError."""

from __future__ import annotations

import json

import pytest
import torch

from spinlab.errors import CheckpointError, ConfigError
from spinlab.twin.checkpoint import FORMAT, TwinMeta, load_twin, save_twin
from spinlab.twin.model import Normalisation, TwinArchitecture, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _saved(tmp_path, **meta_kw):
    arch = TwinArchitecture(
        n_delays=3, delay_samples=2, hidden=12, condition_names=("bias_A", "field_T"), interpolation="hold"
    )
    model = build_model(arch, Normalisation(0.014, 0.005, 0.01, 0.23, [7.5e-3, 0.0], [1e-3, 0.1]), seed=7)
    meta = TwinMeta(
        dt_s=1e-7,
        condition_ranges={"bias_A": [6.5e-3, 8.5e-3], "field_T": [0.0, 0.0]},
        noise_std=4e-4,
        provenance={
            "source": {"device": "sim:vortex"},
            "seeds": {"model": 7},
            "nrmse_history": [{"step": 100, "nrmse": 0.2}],
        },
        **meta_kw,
    )
    path = save_twin(tmp_path / "twin.pt", model, meta)
    return path, model, meta


def test_round_trip_keeps_weights_normalisation_and_metadata(tmp_path):
    path, model, meta = _saved(tmp_path)
    loaded, meta2 = load_twin(path)
    assert loaded.arch == model.arch
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert loaded.normalisation() == model.normalisation()
    assert meta2.dt_s == 1e-7 and meta2.noise_std == 4e-4
    assert meta2.condition_ranges == meta.condition_ranges
    prov = meta2.provenance
    assert prov["seeds"] == {"model": 7} and prov["nrmse_history"][0]["nrmse"] == 0.2
    assert "torch" in prov["versions"] and "created" in prov
    _assert_same_response(loaded, model)


def _assert_same_response(a, b):
    drive = torch.linspace(-0.3, 0.3, 50)[None]
    cond = torch.tensor([[7.5e-3, 0.0]])
    torch.testing.assert_close(
        a.simulate(drive, cond, settle_samples=5), b.simulate(drive, cond, settle_samples=5)
    )


def test_truncated_file_raises_checkpoint_error(tmp_path):
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_twin(path)


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_twin(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_twin(tmp_path / "missing.pt")


def test_foreign_or_future_or_mismatched_checkpoints(tmp_path):
    path, _, _ = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    torch.save({"state_dict": payload["state_dict"]}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a spinlab twin"):
        load_twin(tmp_path / "foreign.pt")
    torch.save({**payload, "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="upgrade spinlab"):
        load_twin(tmp_path / "future.pt")
    arch = dict(payload["architecture"], hidden=13)
    torch.save({**payload, "architecture": arch}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="incompatible"):
        load_twin(tmp_path / "shape.pt")
    state = dict(payload["state_dict"])
    state["y_std"] = torch.tensor(float("nan"))
    torch.save({**payload, "state_dict": state}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_twin(tmp_path / "nan.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused_not_executed(tmp_path, capsys):
    path, _, _ = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "meta": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_twin(tmp_path / "evil.pt")
    assert "must never run" not in capsys.readouterr().out


def test_metadata_must_be_valid(tmp_path):
    with pytest.raises(ConfigError, match="dt_s"):
        TwinMeta(dt_s=0.0)
    path, _, _ = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    assert json.loads(json.dumps(payload["meta"])) == payload["meta"]  # JSON-able
    assert payload["format"] == FORMAT


def _named(tmp_path):
    arch = TwinArchitecture(hidden=12, drive_names=("Ku1.region100", "B_ext"), condition_names=("dmi_J_m2",))
    model = build_model(arch, Normalisation(0.1, 0.2, [8e5, 0.01], [7e4, 0.005], [3e-3], [2e-4]), seed=3)
    inputs = [
        {
            "name": "Ku1.region100",
            "role": "drive",
            "unit": "J/m3",
            "range": [7e5, 9e5],
            "column": "Ku1.region100",
            "quantity": "anisotropy",
        },
        {
            "name": "B_ext",
            "role": "drive",
            "unit": "T",
            "range": [0.0, 0.02],
            "column": "B_extz",
            "quantity": "field",
        },
        {
            "name": "dmi_J_m2",
            "role": "condition",
            "unit": "J/m2",
            "range": [2.6e-3, 3.4e-3],
            "column": "Dind.region100",
            "quantity": "DMI",
        },
    ]
    meta = TwinMeta(
        dt_s=5e-12, inputs=inputs, output={"name": "mz", "unit": "1", "offset": 0.9, "scale": 10.0}
    )
    return save_twin(tmp_path / "named.pt", model, meta), model, meta


def test_round_trip_keeps_named_inputs_units_and_per_drive_normalisation(tmp_path):
    path, model, meta = _named(tmp_path)
    loaded, meta2 = load_twin(path)
    assert loaded.arch == model.arch and loaded.arch.drive_names == ("Ku1.region100", "B_ext")
    assert meta2.inputs == meta.inputs and meta2.output == meta.output
    assert loaded.normalisation().u_mean == pytest.approx([8e5, 0.01])
    assert torch.load(path, weights_only=True)["format_version"] == 2
    drive = torch.stack([8e5 + 5e4 * torch.sin(torch.arange(60.0)), torch.full((60,), 0.01)])[None]
    cond = torch.full((1, 60, 1), 3e-3)
    torch.testing.assert_close(
        loaded.simulate(drive, cond, settle_samples=5), model.simulate(drive, cond, settle_samples=5)
    )
    with pytest.raises(ConfigError, match="role"):
        TwinMeta(dt_s=1e-9, inputs=[{"name": "x", "role": "fast", "unit": "V"}])


def test_version_1_checkpoints_still_load(tmp_path):
    """A file as spinlab wrote it before inputs had names: scalar drive normalisation, no
    drive names in the architecture, no inputs/output in the metadata."""
    path, model, _ = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    arch = {k: v for k, v in payload["architecture"].items() if k != "drive_names"}
    state = {k: v.reshape(()) if k in ("u_mean", "u_std") else v for k, v in payload["state_dict"].items()}
    meta = {k: v for k, v in payload["meta"].items() if k not in ("inputs", "output")}
    meta["drive_unit"] = "V"
    torch.save(
        {**payload, "format_version": 1, "architecture": arch, "state_dict": state, "meta": meta},
        tmp_path / "v1.pt",
    )
    old, old_meta = load_twin(tmp_path / "v1.pt")
    assert old.arch.drive_names == ("drive",) and old.u_mean.shape == (1,)
    specs = old_meta.input_specs(old.arch.drive_names, old.arch.condition_names)
    assert [(s["name"], s["role"], s["unit"]) for s in specs] == [
        ("drive", "drive", "V"),
        ("bias_A", "condition", ""),
        ("field_T", "condition", ""),
    ]
    assert specs[1]["range"] == [6.5e-3, 8.5e-3]
    _assert_same_response(old, model)


def test_inputs_must_match_the_architecture(tmp_path):
    path, _, _ = _named(tmp_path)
    payload = torch.load(path, weights_only=True)
    meta = dict(payload["meta"], inputs=payload["meta"]["inputs"][::-1])
    torch.save({**payload, "meta": meta}, tmp_path / "swapped.pt")
    with pytest.raises(CheckpointError, match="metadata names inputs"):
        load_twin(tmp_path / "swapped.pt")
