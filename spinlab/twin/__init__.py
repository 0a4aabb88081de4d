"""The Spin-Neural ODE digital twin (Chen et al., Nat. Commun. 13, 1016 (2022)).

``model``      the twin: delay-embedded output state, MLP right-hand side, fast RK4 (+ the
               torchdiffeq reference)
``data``       trajectories, normalisation, random training segments, MuMax3 tables
``train``      offline and online (fit-while-acquiring) trainers
``checkpoint`` save/load with metadata and provenance (``torch.load(weights_only=True)``)

A trained checkpoint is a Device through ``open_device("twin:PATH")``
(``sim_backends.twin_device``).
"""
from spinlab.twin.checkpoint import TwinMeta, load_twin, save_twin
from spinlab.twin.data import Trajectory, nrmse
from spinlab.twin.model import Normalisation, SpinNODE, TwinArchitecture, build_model
from spinlab.twin.train import OnlineConfig, TrainConfig, TrainResult, train_offline, train_online

__all__ = [
    "TwinArchitecture", "Normalisation", "SpinNODE", "build_model", "Trajectory", "nrmse",
    "TrainConfig", "TrainResult", "OnlineConfig", "train_offline", "train_online",
    "TwinMeta", "save_twin", "load_twin",
]
