"""A network's per-frame layers computed once per frame as a stream goes on.

A streaming network (`CNNLSTM` with time_padding "valid") splits into `encode`, frames ->
columns, whose every column depends on a fixed run of frames, and `sequence`, which sees
a window's columns whole. Consecutive windows share all but a hop's worth of frames, so
instead of encoding each window whole (every frame about eight times over), the
stream pushes new frames through the conv stack once, carrying the last frames each
convolution still needs, and keeps the columns the windows still to score need.

The columns equal those of each window encoded whole (to float rounding; tests hold it)
when every push after the first (a whole window) is a whole number of column strides:
pooling groups frames from the newest back, so windows a stride apart pool the same groups.
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
    """One streaming network's columns since the stream's start, the newest kept."""

    def __init__(self, network: nn.Module):
        self.network = network
        self.reset()

    def reset(self) -> None:
        self.tails: dict[int, torch.Tensor] = {}  # conv layer -> the last input columns it still needs
        self.columns: torch.Tensor | None = None  # (columns, proj): the newest, those still needed

    def push(self, frames: torch.Tensor) -> int:
        """Encodes new frames; returns how many columns they added."""
        x = self.network.norm(frames[None]).unsqueeze(1)  # (1, 1, F, n)
        for i, layer in enumerate(self.network.convs):
            if isinstance(layer, nn.Conv2d):
                if i in self.tails:
                    x = torch.cat([self.tails[i], x], dim=-1)
                self.tails[i] = x[..., x.shape[-1] - (layer.kernel_size[1] - 1) :]
            x = layer(x)
        new = self.network.proj(x.flatten(1, 2).transpose(1, 2))[0]  # (new columns, proj)
        self.columns = new if self.columns is None else torch.cat([self.columns, new])
        return len(new)

    def probabilities(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, window columns) indices into `columns` -> (n, n_classes)."""
        return torch.softmax(self.network.sequence(self.columns[windows]).float(), dim=-1)


class ColumnStream:
    def __init__(self, network: nn.Module, window_frames: int):
        """`network`: the scorer's inference copy of a streaming network (or an ensemble of
        them); windows of `window_frames` frames."""
        self.streams = [_Columns(m) for m in _members(network)]
        first = self.streams[0].network
        self.stride = first.time_stride  # frames per column
        with torch.inference_mode():
            probe = first.norm.mean.new_zeros(1, len(first.norm.mean), window_frames)
            self.window_columns = first.encode(probe).shape[1]
        self.reset()

    def reset(self) -> None:
        """A new stream: the next push starts with a whole window."""
        self.count = 0  # columns pushed since reset
        for stream in self.streams:
            stream.reset()

    def columns_for(self, frames: int, whole: bool) -> int:
        """Columns that `frames` new frames add: a whole window's first, a whole number of strides after."""
        return self.window_columns if whole else frames // self.stride

    @property
    def columns(self) -> torch.Tensor | None:
        """The first network's columns held (the only one's, without an ensemble)."""
        return self.streams[0].columns

    @torch.inference_mode()
    def push(self, frames: torch.Tensor) -> None:
        """(n_features, n) new frames, oldest first: a whole window first, then any number
        of strides (several windows' worth at once)."""
        added = [stream.push(frames) for stream in self.streams]
        self.count += added[0]

    @torch.inference_mode()
    def probabilities(self, ends: list[int]) -> torch.Tensor:
        """(len(ends), n_classes): the windows whose newest column is column `end - 1` since
        reset, each scored from its columns (the mean over an ensemble's members), all in one
        batch. Only the newest window's columns are kept afterwards."""
        first = self.count - len(self.streams[0].columns)  # the index, since reset, of the oldest held
        windows = torch.tensor(ends)[:, None] - first + torch.arange(-self.window_columns, 0)[None]
        probs = torch.stack([stream.probabilities(windows) for stream in self.streams]).mean(0)
        for stream in self.streams:
            stream.columns = stream.columns[-self.window_columns :]
        return probs
