"""A stream's encoder blocks (models whose frontend is Whisper's encoder), each computed once.

The features of a window are its blocks: the grid of `block_samples` that ends on the
window's last sample, each block encoded with the audio before it as context
(encoder/frontend.py). At a hop of whole blocks, consecutive windows share all but their
newest blocks, so a live hop encodes one block. The encoder's convolutions are valid, so a
frame's convolved value is the same in every chunk that holds it: each block's is computed
once too and serves as the context of the blocks after it, and only the attention layers
run over the context again. Blocks are kept until no later window can hold them. A hop of
any other length puts each window's blocks on their own grid: they are then computed per
window, with the same definition and the same numbers as training's.

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
        spec = frontend.spec
        self.context_blocks = -(-spec.context_frames // spec.block_frames)  # blocks whose frames the context reads
        self.context_frames = spec.context_frames
        self.cache: dict[int, torch.Tensor] = {}  # block end (samples since reset) -> (d_model, block_frames)
        self.convolved: dict[int, torch.Tensor] = {}  # block end -> its frames through the convolutions
        self.encoded = 0  # blocks encoded since reset (a benchmark's and a test's count)

    def reset(self) -> None:
        self.cache.clear()
        self.convolved.clear()
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
        the context before them), for a window still filling that will hold them; returns
        how many were not encoded yet. A block's numbers are the same whenever it is encoded."""
        before = self.encoded
        self._encode([(audio, end, count)], batch=1)
        self._forget_before(end - (count - 1) * self.block)
        return self.encoded - before

    def _encode(self, windows: list[tuple[np.ndarray, int, int]], batch: int = 0) -> None:
        """[(audio, end, n)]: encodes each of the newest n blocks ending at `end` not encoded
        yet, `batch` blocks a pass through the attention layers (0: all at once). Ahead of
        time (prefetch) there is no hurry, and one block a pass keeps a live daemon's heap to
        a block's temporaries: the eight-block batches of a file cost it 2-3 MB resident."""
        todo, convolve = [], {}  # blocks to encode; block end -> its conv segment
        span = self.block + self.frontend.conv_past_samples
        for audio, end, n in windows:
            for k in range(n):
                block_end = end - k * self.block
                if block_end in self.cache or block_end in todo:
                    continue
                todo.append(block_end)
                for j in range(self.context_blocks + 1):  # the block and its context's blocks
                    at = block_end - j * self.block
                    if at not in self.convolved and at not in convolve:
                        stop = len(audio) - (k + j) * self.block
                        convolve[at] = audio[stop - span : stop]
        if convolve:
            mel = self.frontend.log_mel(self._tensor(list(convolve.values())))
            self.convolved.update(zip(convolve, self.frontend.convolve(mel)))
        step = batch or len(todo)
        for first in range(0, len(todo), step):
            part = todo[first : first + step]
            chunks = torch.stack([torch.cat([self.convolved[e - j * self.block]
                                             for j in reversed(range(self.context_blocks + 1))], dim=1)
                                  [:, -(self.context_frames + self.frontend.block) :] for e in part])
            self.cache.update(zip(part, self.frontend.attend(chunks)))
            self.encoded += len(part)

    def _forget_before(self, oldest: int) -> None:
        """Drops the blocks ending before `oldest`, and the convolved frames no block from it on reads."""
        for block_end in [e for e in self.cache if e < oldest]:
            del self.cache[block_end]
        for block_end in [e for e in self.convolved if e < oldest - self.context_blocks * self.block]:
            del self.convolved[block_end]

    def _tensor(self, segments: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.stack(segments), dtype=np.float32)).to(self.device)
