"""A stream's encoder blocks (models whose frontend is Whisper's encoder), each computed once.

The features of a window are its blocks: the grid of `block_samples` that ends on the
window's last sample, each block encoded with the audio before it as context
(encoder/frontend.py). At a hop of whole blocks, consecutive windows share all but their
newest blocks, so a live hop encodes one block; blocks are kept until no later window can
hold them. A hop of any other length puts each window's blocks on their own grid: they are
then computed per window, with the same definition and the same numbers as training's.
"""

from __future__ import annotations

import numpy as np
import torch


class BlockStream:
    def __init__(self, frontend, window: int, device: torch.device):
        self.frontend, self.device = frontend, device
        self.block = frontend.block_samples
        self.n_blocks = window // self.block
        self.cache: dict[int, torch.Tensor] = {}  # block end (samples since reset) -> (d_model, block_frames)
        self.encoded = 0  # blocks encoded since reset (a benchmark's and a test's count)

    def reset(self) -> None:
        self.cache.clear()
        self.encoded = 0

    @torch.inference_mode()
    def features(self, windows: list[tuple[np.ndarray, int]]) -> torch.Tensor:
        """[(audio ending at the window's last sample and holding `frontend.past_samples`
        before the window, samples fed since reset at its last sample)], oldest first ->
        (n, d_model, frames): every block not yet computed is encoded, all in one batch."""
        todo, segments, span = {}, [], self.block + self.frontend.past_samples
        for audio, end in windows:
            for k in range(self.n_blocks):
                block_end = end - k * self.block
                if block_end in self.cache or block_end in todo:
                    continue
                todo[block_end] = len(segments)
                stop = len(audio) - k * self.block
                segments.append(audio[stop - span : stop])
        if segments:
            batch = torch.from_numpy(np.ascontiguousarray(np.stack(segments), dtype=np.float32)).to(self.device)
            encoded = self.frontend.blocks_ending(batch, 1)
            self.cache.update((block_end, encoded[i]) for block_end, i in todo.items())
            self.encoded += len(segments)
        out = torch.stack([torch.cat([self.cache[end - k * self.block] for k in reversed(range(self.n_blocks))], dim=1)
                           for _, end in windows])
        oldest = windows[-1][1] - (self.n_blocks - 1) * self.block  # no later window holds an older block
        for block_end in [e for e in self.cache if e < oldest]:
            del self.cache[block_end]
        return out
