"""A stream's encoder blocks (models whose frontend is Whisper's encoder), each computed once.

The features of a window are its blocks: the grid of `block_samples` that ends on the
window's last sample, each block encoded with the audio before it as context
(encoder/frontend.py). At a hop of whole blocks, consecutive windows share all but their
newest blocks, so a live hop encodes one block. The encoder's convolutions are valid, so a
frame's convolved value is the same in every chunk that holds it: each block's is computed
once too and serves as the context of the blocks after it. With the context reused (the
default recipe), so do a block's keys and values into each layer above the first: only the
first layer runs over the context again. Blocks are kept until no later window can hold
them. A hop of any other length puts each window's blocks on their own grid: they are then
computed per window, with the same definition and the same numbers as training's.

A live stream also encodes ahead (`prefetch`, from Pipeline.prepare): when the voice gate
hears speech begin, the blocks of the window still filling that are complete already are
encoded between windows, so the window that opens the gate after a silence waits for its
newest block only.
"""

from __future__ import annotations

import numpy as np
import torch


class BlockStream:
    def __init__(self, frontend, window: int, device: torch.device):
        self.frontend, self.device = frontend, device
        self.block = frontend.block_samples
        self.n_blocks = window // self.block
        self.context_blocks = frontend.context_blocks
        self.lead_blocks = frontend.lead_blocks
        # Passes a block goes through: the first layers, then (context reused) each upper layer.
        self.passes = len(frontend.encoder.blocks) if frontend.reuse else 1
        self.cache: dict[int, torch.Tensor] = {}  # block end (samples since reset) -> (d_model, block_frames)
        self.convolved: dict[int, torch.Tensor] = {}  # block end -> its frames through the convolutions
        # Context reused: per upper layer, block end -> the block's keys (and values) into
        # that layer, which the blocks after it read as their context.
        self.keys: dict[int, dict[int, torch.Tensor]] = {layer: {} for layer in range(1, self.passes)}
        self.values: dict[int, dict[int, torch.Tensor]] = {layer: {} for layer in range(1, self.passes)}
        self.encoded = 0  # blocks encoded since reset (a benchmark's and a test's count)

    def reset(self) -> None:
        self.cache.clear()
        self.convolved.clear()
        for kept in (*self.keys.values(), *self.values.values()):
            kept.clear()
        self.encoded = 0

    @torch.inference_mode()
    def features(self, windows: list[tuple[np.ndarray, int]]) -> torch.Tensor:
        """[(audio ending at the window's last sample and holding `frontend.past_samples`
        before the window, samples fed since reset at its last sample)], oldest first ->
        (n, d_model, frames): every block not yet computed is encoded, all in one batch."""
        self._encode([(audio, end, self.n_blocks) for audio, end in windows])
        out = torch.stack([torch.cat([self.cache[end - k * self.block] for k in reversed(range(self.n_blocks))], dim=1)
                           for _, end in windows])
        self._forget_before(windows[-1][1] - (self.n_blocks - 1) * self.block)  # no later window holds older
        return out

    @torch.inference_mode()
    def prefetch(self, audio: np.ndarray, end: int, count: int) -> int:
        """Encodes now the newest `count` blocks ending at `end` (audio ending there, with
        the past before them), for a window still filling that will hold them; returns how
        many were not encoded yet. A block's numbers are the same whenever it is encoded."""
        before = self.encoded
        self._encode([(audio, end, count)])
        self._forget_before(end - (count - 1) * self.block)
        return self.encoded - before

    def _encode(self, windows: list[tuple[np.ndarray, int, int]]) -> None:
        """[(audio, end, n)]: encodes each of the newest n blocks ending at `end` not encoded yet."""
        wanted, source = set(), {}  # blocks to encode; block end -> (audio, end) holding it
        for audio, end, n in windows:
            for k in range(n + self.lead_blocks + self.context_blocks):
                source.setdefault(end - k * self.block, (audio, end))
            wanted.update(e for e in (end - k * self.block for k in range(n)) if e not in self.cache)
        if not wanted:
            return
        # The blocks of each pass, last first: a pass's blocks, and the context blocks whose
        # keys and values it reads and that are not kept, go through the pass before it.
        passes = [sorted(wanted)]
        for layer in reversed(range(1, self.passes)):
            context = {e - j * self.block for e in passes[0] for j in range(1, self.context_blocks + 1)}
            passes.insert(0, sorted(set(passes[0]) | (context - self.keys[layer].keys())))
        self._convolve({e - j * self.block for e in passes[0] for j in range(self.context_blocks + 1)}, source)
        chunks = torch.stack([self._frames(self.convolved, e) for e in passes[0]])
        states = dict(zip(passes[0], self.frontend.first_layers(chunks)))
        for layer in range(1, self.passes):
            new = [e for e in passes[layer - 1] if e not in self.keys[layer]]
            if new:
                keys, values = self.frontend.keys_values(layer, torch.stack([states[e] for e in new]))
                self.keys[layer].update(zip(new, keys))
                self.values[layer].update(zip(new, values))
            keys = torch.stack([self._frames(self.keys[layer], e, axis=0) for e in passes[layer]])
            values = torch.stack([self._frames(self.values[layer], e, axis=0) for e in passes[layer]])
            states = dict(zip(passes[layer], self.frontend.upper_layer(
                layer, torch.stack([states[e] for e in passes[layer]]), keys, values)))
        for e in passes[-1]:
            self.cache[e] = states[e].T
        self.encoded += len(passes[-1])

    def _frames(self, kept: dict[int, torch.Tensor], block_end: int, axis: int = 1) -> torch.Tensor:
        """The frames of block `block_end` and of its context before it, in time order, along `axis`."""
        return torch.cat([kept[block_end - j * self.block] for j in reversed(range(self.context_blocks + 1))], dim=axis)

    def _convolve(self, blocks: set[int], source: dict[int, tuple[np.ndarray, int]]) -> None:
        """Puts the convolved frames of each of `blocks` not kept yet in `convolved`."""
        span = self.block + self.frontend.conv_past_samples
        segments = {}
        for e in sorted(blocks - self.convolved.keys()):
            audio, end = source[e]
            stop = len(audio) - (end - e)
            segments[e] = audio[stop - span : stop]
        if segments:
            mel = self.frontend.log_mel(self._tensor(list(segments.values())))
            self.convolved.update(zip(segments, self.frontend.convolve(mel)))

    def _forget_before(self, oldest: int) -> None:
        """Drops what no block from `oldest` on reads: older blocks' features, the keys and
        values of blocks before its lead, and the convolved frames before their context."""
        lead = oldest - self.lead_blocks * self.block
        for block_end in [e for e in self.cache if e < oldest]:
            del self.cache[block_end]
        for kept in (*self.keys.values(), *self.values.values()):
            for block_end in [e for e in kept if e < lead]:
                del kept[block_end]
        for block_end in [e for e in self.convolved if e < lead - self.context_blocks * self.block]:
            del self.convolved[block_end]

    def _tensor(self, segments: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.stack(segments), dtype=np.float32)).to(self.device)
