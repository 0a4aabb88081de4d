"""Random short training segments (Chen et al.: ~50 segments x ~20 points a step)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from spinlab.errors import ConfigError
from spinlab.twin.model import SpinNODE
from spinlab.twin.trajectory import Trajectory


class SegmentSampler:
    """Random short segments of normalised, delay-embedded training data.

    Everything is embedded once (one big tensor for all trajectories); a batch is a gather of
    ``n_segments`` windows that never cross a trajectory boundary. ``extend`` adds trajectories
    as they arrive (the online trainer)."""

    def __init__(self, model: SpinNODE, segment_samples: int, seed: int = 0) -> None:
        if segment_samples < 1:
            raise ConfigError(f"segment_samples must be >= 1, got {segment_samples}")
        self.model = model
        self.segment_samples = int(segment_samples)
        device = model.y_mean.device  # the data lives where the model trains: no copy per step
        self.generator = torch.Generator(device).manual_seed(int(seed))
        k = model.arch.n_delays
        like = {"dtype": model.y_mean.dtype, "device": device}
        self._x = torch.zeros(0, k, **like)
        self._u = torch.zeros(0, model.arch.n_drive_features, **like)
        self._c = torch.zeros(0, len(model.arch.condition_names), **like)
        self._starts = torch.zeros(0, dtype=torch.long, device=device)
        self.n_samples = 0
        self._varying = False  # some condition changes within a recording: per-sample values

    def extend(self, trajectories: Iterable[Trajectory]) -> None:
        xs, us, cs, starts = [self._x], [self._u], [self._c], [self._starts]
        offset = self._x.shape[0]
        hist = self.model.arch.history_samples
        like = {"dtype": self._x.dtype, "device": self._x.device}
        with torch.no_grad():
            for t in trajectories:
                y = self.model.norm_output(torch.as_tensor(t.response, **like))[None]
                u = self.model.norm_drive(torch.as_tensor(t.drive, **like)[None])
                c = torch.as_tensor(t.condition_series(self.model.arch.condition_names), **like)
                xs.append(self.model.embed_output(y)[0])
                us.append(self.model.delay_features(u)[0])
                cs.append(self.model.norm_conditions(c))
                self._varying = self._varying or t.varying
                last = t.n - 1 - self.segment_samples
                if last >= hist - 1:
                    starts.append(torch.arange(hist - 1, last + 1, device=like["device"]) + offset)
                offset += t.n
                self.n_samples += t.n
        self._x, self._u, self._c = torch.cat(xs), torch.cat(us), torch.cat(cs)
        self._starts = torch.cat(starts)

    @property
    def n_windows(self) -> int:
        return int(self._starts.numel())

    def sample(self, n_segments: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x0 (B,k), u_feat (B,L+1,Dk), c, x_true (B,L,k))``, normalised; ``c`` is
        ``(B,C)``, or ``(B,L+1,C)`` when some condition changes within a recording."""
        if self.n_windows == 0:
            raise ConfigError(
                f"no training window of {self.segment_samples + 1} samples fits in the data; "
                "use fewer --segment-samples or longer recordings"
            )
        device = self._starts.device
        pick = torch.randint(self.n_windows, (n_segments,), generator=self.generator, device=device)
        start = self._starts[pick]
        idx = start[:, None] + torch.arange(self.segment_samples + 1, device=device)
        x = self._x[idx]
        return x[:, 0], self._u[idx], self._c[idx] if self._varying else self._c[start], x[:, 1:]
