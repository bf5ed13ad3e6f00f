"""Which weights a run keeps: the best validation epoch's, the average of the last N
epochs', or the last epoch's (`TrainConfig.select`, `average_last`)."""

from __future__ import annotations

import copy

import torch

from streamemo.train.recipe import TrainConfig


class WeightSelection:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.best_score, self.best_state, self.stale = -1.0, None, 0
        self.averaged, self.n_averaged = None, 0

    def update(self, epoch: int, score: float, network: torch.nn.Module) -> None:
        """After epoch `epoch` (0-based) scored `score` (validation UA, else training accuracy)."""
        if score > self.best_score:
            self.best_score, self.best_state, self.stale = score, copy.deepcopy(network.state_dict()), 0
        else:
            self.stale += 1
        cfg = self.config
        if cfg.average_last and epoch >= cfg.epochs - cfg.average_last:
            self.averaged, self.n_averaged = _running_average(self.averaged, network.state_dict(), self.n_averaged)

    def apply(self, network: torch.nn.Module, epochs_run: int) -> str:
        """Loads the kept weights into `network`; says which, in words."""
        cfg = self.config
        if cfg.select == "best" and self.best_state is not None:
            network.load_state_dict(self.best_state)
            return f"best validation epoch ({self.best_score:.3f} UA)"
        if cfg.average_last and self.averaged is not None:
            network.load_state_dict(self.averaged)
            return f"average of the last {self.n_averaged} epochs"
        return f"last epoch ({epochs_run})"


def _running_average(avg: dict | None, state: dict, n: int) -> tuple[dict, int]:
    """Mean of state dicts (float tensors averaged; integer buffers such as BatchNorm's
    batch counter taken from the latest)."""
    if avg is None:
        return {k: v.detach().clone().float() if v.is_floating_point() else v.clone() for k, v in state.items()}, 1
    for k, v in state.items():
        if v.is_floating_point():
            avg[k].mul_(n / (n + 1)).add_(v.detach().float(), alpha=1 / (n + 1))
        else:
            avg[k] = v.clone()
    return avg, n + 1
