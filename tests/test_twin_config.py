"""One config system: the twin's and the features' settings are validated pydantic models, twin-train
nests them as groups, and what a run file or checkpoint stores is their JSON (old ones still load)."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from spinlab.cli import app
from spinlab.config import Config
from spinlab.errors import ConfigError
from spinlab.protocols.twin_train import TwinTrainConfig, plan
from spinlab.speech.features import FeatureConfig
from spinlab.twin.checkpoint import TwinMeta, load_twin, save_twin
from spinlab.twin.model import TwinArchitecture, build_model
from spinlab.twin.mumax import MumaxSplit
from spinlab.twin.train import OnlineConfig, TrainConfig

LIBRARY_CONFIGS = (TrainConfig, OnlineConfig, TwinArchitecture, MumaxSplit, FeatureConfig)


@pytest.mark.parametrize("cls", LIBRARY_CONFIGS)
def test_every_library_setting_has_a_type_a_default_and_a_one_line_description(cls):
    assert issubclass(cls, Config)
    for name, info in cls.model_fields.items():
        assert info.description and "\n" not in info.description, f"{cls.__name__}.{name}"
        assert not info.is_required(), f"{cls.__name__}.{name} has no default"
    assert cls(**cls().to_dict()) == cls()  # its JSON rebuilds it


@pytest.mark.parametrize(
    "cls,bad,says",
    [
        (TrainConfig, {"learning_rte": 1e-3}, "learning_rte is not a setting"),
        (TrainConfig, {"learning_rate": math.nan}, "learning_rate"),
        (TrainConfig, {"lr_schedule": "step"}, "lr_schedule"),
        (OnlineConfig, {"queue_size": 0}, "queue_size"),
        (TwinArchitecture, {"hidden": 4.0}, "hidden"),
        (TwinArchitecture, {"drive_names": ("a",), "condition_names": ("a",)}, "duplicate"),
        (MumaxSplit, {"n_val": 10, "n_train": 10}, "n_val"),
        (FeatureConfig, {"kind": "wavelet"}, "unknown"),
    ],
)
def test_a_typo_or_a_bad_value_is_one_config_error_line(cls, bad, says):
    with pytest.raises(ConfigError, match=says) as info:
        cls(**bad)
    assert "\n" not in str(info.value)


def test_twin_train_groups_are_nested_models():
    config = TwinTrainConfig(
        out="twin.pt",
        train={"learning_rate": 1e-2},
        architecture={"hidden": 16},
        acquire={"validation_every": 6},
    )
    assert config.train.learning_rate == 1e-2 and config.train.max_steps == TrainConfig().max_steps
    assert config.architecture == TwinArchitecture(hidden=16)
    assert isinstance(config.online, OnlineConfig) and isinstance(config.split, MumaxSplit)
    stored = config.to_dict()
    assert stored["train"]["learning_rate"] == 1e-2 and stored["architecture"]["drive_names"] == ["drive"]
    assert TwinTrainConfig(**stored) == config


def test_an_old_run_files_config_with_partial_groups_still_builds_the_plan():
    """Run files written before the groups were models stored only the keys given (or {})."""
    old = {
        "out": "twin.pt",
        "source": "device",
        "architecture": {"hidden": 16, "condition_names": ["bias_A"]},
        "train": {},
        "acquire": {"validation_every": 6},
        "online": {},
        "rest_drive_V": "auto",
        "table": None,
        "split": {},
        "torch_device": "cpu",
    }
    config = plan(old).config
    assert config.architecture.condition_names == ("bias_A",) and config.train == TrainConfig()
    assert config.acquire.validation_every == 6


@pytest.mark.parametrize(
    "setting,says",
    [
        ("train.learning_rate=abc", "learning_rate"),
        ("architecture.hidden=4.5", "hidden"),
        ("online.queue_sise=3", "queue_sise is not a setting"),
    ],
)
def test_a_bad_group_setting_on_the_command_line_is_one_line_and_exit_2(tmp_path, setting, says):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "twin-train",
            "-d",
            "sim:vortex",
            "--out",
            str(tmp_path / "t.pt"),
            "--set",
            setting,
            "--runs-dir",
            str(runs),
        ],
    )
    assert result.exit_code == 2 and not runs.exists(), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.output


def test_a_checkpoint_stores_the_architectures_json(tmp_path):
    arch = TwinArchitecture(hidden=8, condition_names=("bias_A",), interpolation="hold")
    path = save_twin(tmp_path / "twin.pt", build_model(arch, seed=0), TwinMeta(dt_s=1e-7))
    payload = torch.load(path, weights_only=True)
    assert payload["architecture"] == arch.model_dump(mode="json")
    assert load_twin(path)[0].arch == arch
