"""A network's per-frame layers computed once per frame as a stream goes on.

A streaming network (`CNNLSTM` with time_padding "valid") splits into `encode`, frames ->
columns, whose every column depends on a fixed run of frames, and `sequence`, which sees
a window's columns whole. Consecutive windows share all but a hop's worth of frames, so
instead of encoding each window whole (every frame eight times at a 0.25 s hop), the
stream pushes each hop's new frames through the conv stack once, carrying the last
frames each convolution still needs, and keeps the newest window's worth of columns.

The columns equal those of the window encoded whole (to float rounding; tests hold it)
when each push after the first is a whole number of column strides: pooling groups
frames from the newest back, so windows a stride apart pool the same groups.
"""

from __future__ import annotations

import torch
from torch import nn


def _members(network: nn.Module) -> list[nn.Module]:
    """The networks to stream: an ensemble's members (it averages their probabilities), else itself."""
    return list(network.members) if hasattr(network, "members") else [network]


def can_stream(network: nn.Module, hop_frames: int) -> bool:
    """Whether `network` streams at a hop of `hop_frames` frames."""
    return all(getattr(m, "streams", False) and hop_frames % m.time_stride == 0 for m in _members(network))


class _Columns:
    """One streaming network's columns."""

    def __init__(self, network: nn.Module, window_frames: int):
        self.network = network
        with torch.inference_mode():
            probe = network.norm.mean.new_zeros(1, len(network.norm.mean), window_frames)
            self.window_columns = network.encode(probe).shape[1]
        self.reset()

    def reset(self) -> None:
        self.tails: dict[int, torch.Tensor] = {}  # conv layer -> the last input columns it still needs
        self.columns: torch.Tensor | None = None  # (columns, proj), the newest window's worth

    def push(self, frames: torch.Tensor) -> None:
        x = self.network.norm(frames[None]).unsqueeze(1)  # (1, 1, F, n)
        for i, layer in enumerate(self.network.convs):
            if isinstance(layer, nn.Conv2d):
                if i in self.tails:
                    x = torch.cat([self.tails[i], x], dim=-1)
                self.tails[i] = x[..., x.shape[-1] - (layer.kernel_size[1] - 1) :]
            x = layer(x)
        new = self.network.proj(x.flatten(1, 2).transpose(1, 2))[0]  # (new columns, proj)
        self.columns = new if self.columns is None else torch.cat([self.columns, new])[-self.window_columns :]

    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.network.sequence(self.columns[None]).float(), dim=-1)[0]


class ColumnStream:
    def __init__(self, network: nn.Module, window_frames: int):
        """`network`: the scorer's inference copy of a streaming network (or an ensemble of
        them); a window of `window_frames` frames."""
        self.streams = [_Columns(m, window_frames) for m in _members(network)]

    def reset(self) -> None:
        """A new stream: the next push is a whole window."""
        for stream in self.streams:
            stream.reset()

    @property
    def empty(self) -> bool:
        return self.streams[0].columns is None

    @property
    def columns(self) -> torch.Tensor | None:
        """The first network's columns of the newest window (the only one's, without an ensemble)."""
        return self.streams[0].columns

    @torch.inference_mode()
    def push(self, frames: torch.Tensor) -> None:
        """(n_features, n) new frames, oldest first: a whole window first, a hop after."""
        for stream in self.streams:
            stream.push(frames)

    @torch.inference_mode()
    def probabilities(self) -> torch.Tensor:
        """The newest window's class probabilities: the mean over an ensemble's members."""
        return torch.stack([stream.probabilities() for stream in self.streams]).mean(0)
