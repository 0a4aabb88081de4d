"""Analysis the plans call: scores, ridge readouts and least-squares fits, over plain arrays.

``metrics``  scores of a prediction against the truth (``nrmse``)
``ridge``    closed-form ridge readouts and the cross-validated choice of their penalty
``fitting``  batched least squares over a box of positive parameters (Levenberg-Marquardt,
             grid search, sandwich uncertainty)

Nothing here knows a Device, a run or a plan: it imports only numpy, scipy and the core errors.
"""

from spinlab.analysis.fitting import BoxObjective, descend, grid_search, levenberg_marquardt, uncertainty
from spinlab.analysis.metrics import nrmse
from spinlab.analysis.ridge import RidgeReadout, fit_cv, select_alpha

__all__ = [
    "nrmse",
    "RidgeReadout",
    "fit_cv",
    "select_alpha",
    "BoxObjective",
    "levenberg_marquardt",
    "descend",
    "grid_search",
    "uncertainty",
]
