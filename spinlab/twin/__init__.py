"""The Spin-Neural ODE digital twin (Chen et al., Nat. Commun. 13, 1016 (2022)).

``model``      the twin: delay-embedded output state, MLP right-hand side, fast RK4 (+ the
               torchdiffeq reference)
``trajectory`` recorded drive/response pairs, normalisation, drive and condition ranges
``sampler``    random short training segments
``evaluation`` free-running predictions of held-out trajectories and their NRMSE
``mumax``      MuMax3 tables as trajectories
``data``       the old path of the four above (re-exports)
``train``      offline and online (fit-while-acquiring) trainers
``checkpoint`` save/load with metadata and provenance (``torch.load(weights_only=True)``)

A trained checkpoint is a Device through ``open_device("twin:PATH")``
(``sim_backends.twin_device``).
"""

from spinlab.analysis.metrics import nrmse
from spinlab.twin.checkpoint import TwinMeta, load_twin, save_twin
from spinlab.twin.model import Normalisation, SpinNODE, TwinArchitecture, build_model
from spinlab.twin.train import OnlineConfig, TrainConfig, TrainResult, train_offline, train_online
from spinlab.twin.trajectory import Trajectory

__all__ = [
    "TwinArchitecture",
    "Normalisation",
    "SpinNODE",
    "build_model",
    "Trajectory",
    "nrmse",
    "TrainConfig",
    "TrainResult",
    "OnlineConfig",
    "train_offline",
    "train_online",
    "TwinMeta",
    "save_twin",
    "load_twin",
]
