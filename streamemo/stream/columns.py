"""A network's per-frame layers computed once per frame as a stream goes on.

A streaming network (`CNNLSTM` with time_padding "valid") splits into `encode`, frames ->
columns, whose every column depends on a fixed run of frames, and `sequence`, which sees
a window's columns whole. Consecutive windows share all but a hop's worth of frames, so
instead of encoding each window whole (every frame about eight times over), the
stream pushes new frames through the conv stack once, carrying the last frames each
convolution still needs, and keeps the columns the windows still to score need.

A window's centred frames at its edges reach into reflect padding, so they differ from the
frames of the same place in a longer recording. No column depends on the first of them
(pooling from the newest back leaves the oldest frame out), but the newest column or two do
on the last. Only the columns before those are streamed; a push's newest window has its
last frames ride along through the layers (their columns kept apart, nothing carried over),
and a batch's earlier windows encode theirs from a short slab of their newest frames.

The columns equal those of each window encoded whole (to float rounding; tests hold it)
when every push after the first (a whole window) is a whole number of column strides:
pooling groups frames from the newest back, so windows a stride apart pool the same groups.
"""

from __future__ import annotations

import torch
from torch import nn

from streamemo.networks import _MaxPool2d


def _members(network: nn.Module) -> list[nn.Module]:
    """The networks to stream: an ensemble's members (it averages their probabilities), else itself."""
    return list(network.members) if hasattr(network, "members") else [network]


def column_frames(network: nn.Module, frames: int) -> list[tuple[int, int]]:
    """The first and last frame that each column of a streaming network's window of `frames`
    frames depends on, oldest column first."""
    spans = [(i, i) for i in range(frames)]
    for layer in network.convs:
        if isinstance(layer, nn.Conv2d):  # valid in time
            k = layer.kernel_size[1]
            spans = [(spans[i][0], spans[i + k - 1][1]) for i in range(len(spans) - k + 1)]
        elif isinstance(layer, _MaxPool2d):  # from the newest back
            k = layer.kernel_size[1]
            spans = spans[len(spans) % k :]
            spans = [(spans[i][0], spans[i + k - 1][1]) for i in range(0, len(spans), k)]
    return spans


def can_stream(network: nn.Module, hop_frames: int, window_frames: int, padded: tuple[int, int]) -> bool:
    """Whether `network` streams at a hop of `hop_frames` frames over windows of
    `window_frames`, whose first and last frames `padded` (FrontendSpec.padded_frames) differ
    from a longer recording's: no column may depend on the first, nor the oldest on the last."""
    lead, trail = padded
    for m in _members(network):
        if not getattr(m, "streams", False) or hop_frames % m.time_stride:
            return False
        spans = column_frames(m, window_frames)
        if not spans or spans[0][0] < lead or spans[0][1] >= window_frames - trail:
            return False
    return True


class _Columns:
    """One streaming network's columns since the stream's start, the newest kept."""

    def __init__(self, network: nn.Module):
        self.network = network
        self.reset()

    def reset(self) -> None:
        self.tails: dict[int, torch.Tensor] = {}  # conv layer -> the last input columns it still needs
        self.columns: torch.Tensor | None = None  # (columns, proj): the newest, those still needed
        self.completing: torch.Tensor | None = None  # (newest, proj): the last push's newest window's

    def push(self, frames: torch.Tensor, extra: int) -> int:
        """Encodes new frames; returns how many columns they added. The last `extra` frames
        are not new: they complete the newest window (its padded edge), and go through the
        layers with the new ones, but their columns are kept apart (`completing`) and no
        convolution carries them over."""
        x = self.network.norm(frames[None]).unsqueeze(1)  # (1, 1, F, n)
        for i, layer in enumerate(self.network.convs):
            if isinstance(layer, nn.Conv2d):
                if i in self.tails:
                    x = torch.cat([self.tails[i], x], dim=-1)
                end = x.shape[-1] - extra
                self.tails[i] = x[..., end - (layer.kernel_size[1] - 1) : end]
            elif isinstance(layer, _MaxPool2d):
                extra //= layer.kernel_size[1]  # a whole number of strides: pooled apart from the new
            x = layer(x)
        out = self.network.proj(x.flatten(1, 2).transpose(1, 2))[0]  # (columns, proj)
        new, self.completing = out[: len(out) - extra], out[len(out) - extra :]
        self.columns = new if self.columns is None else torch.cat([self.columns, new])
        return len(new)

    def probabilities(self, windows: torch.Tensor, slabs: torch.Tensor | None, newest: int) -> torch.Tensor:
        """(n, streamed columns) indices into `columns` -> (n, n_classes), each window
        completed by its `newest` columns: the last one's from the push (`completing`), the
        others' from their slabs of newest frames (n - 1, n_features, frames)."""
        columns = self.columns[windows]
        if newest:
            last = self.completing[None]
            completing = last if slabs is None else torch.cat([self.network.encode(slabs)[:, -newest:], last])
            columns = torch.cat([columns, completing], dim=1)
        return torch.softmax(self.network.sequence(columns).float(), dim=-1)


class ColumnStream:
    def __init__(self, network: nn.Module, window_frames: int, padded: tuple[int, int] = (0, 0)):
        """`network`: the scorer's inference copy of a streaming network (or an ensemble of
        them); windows of `window_frames` frames, their first and last `padded` ones
        reaching into reflect padding (FrontendSpec.padded_frames)."""
        self.streams = [_Columns(m) for m in _members(network)]
        first = self.streams[0].network
        self.stride = first.time_stride  # frames per column
        self.window_frames = window_frames
        self.lead, trail = padded
        spans = column_frames(first, window_frames)
        self.window_columns = len(spans)
        # The newest columns depend on padded frames: each window computes its own (`probabilities`).
        self.newest = sum(last >= window_frames - trail for _, last in spans)
        self.streamed = self.window_columns - self.newest  # columns per window from the stream
        # A whole window's first push: its frames up to the last one the streamed columns use.
        self.pushed_frames = spans[self.streamed - 1][1] + 1
        self.after_push = window_frames - self.pushed_frames  # a window's frames past it: the newest columns'
        self.slab_frames = window_frames - spans[self.streamed][0] if self.newest else 0
        self.reset()

    def reset(self) -> None:
        """A new stream: the next push starts with a whole window."""
        self.count = 0  # columns pushed since reset
        for stream in self.streams:
            stream.reset()

    def columns_for(self, frames: int, whole: bool) -> int:
        """Columns that `frames` new frames add: a whole window's first, a whole number of strides after."""
        return self.streamed if whole else frames // self.stride

    @property
    def columns(self) -> torch.Tensor | None:
        """The first network's streamed columns held (the only one's, without an ensemble)."""
        return self.streams[0].columns

    @torch.inference_mode()
    def push(self, frames: torch.Tensor, completing: torch.Tensor | None = None) -> None:
        """(n_features, n) new frames, oldest first: a whole window's first `pushed_frames`
        first, then any number of strides (several windows' worth at once); `completing`:
        the newest window's frames after them, to its end (`window_frames - pushed_frames`)."""
        extra = 0 if completing is None else completing.shape[1]
        frames = frames if completing is None else torch.cat([frames, completing], dim=1)
        added = [stream.push(frames, extra) for stream in self.streams]
        self.count += added[0]

    @torch.inference_mode()
    def probabilities(self, ends: list[int], slabs: torch.Tensor | None = None) -> torch.Tensor:
        """(len(ends), n_classes): the windows whose newest streamed column is column `end - 1`
        since reset, scored (the mean over an ensemble's members) all in one batch. With a
        padded edge (`slab_frames`), the last window is completed by the last push and the
        others by `slabs`, each its newest `slab_frames` frames. Only the newest window's
        streamed columns are kept afterwards."""
        first = self.count - len(self.streams[0].columns)  # the index, since reset, of the oldest held
        windows = torch.tensor(ends)[:, None] - first + torch.arange(-self.streamed, 0)[None]
        probs = torch.stack([stream.probabilities(windows, slabs, self.newest) for stream in self.streams]).mean(0)
        for stream in self.streams:
            stream.columns = stream.columns[-self.streamed :]
        return probs
