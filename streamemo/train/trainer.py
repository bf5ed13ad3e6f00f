"""The training loop: clips -> a trained `Model`.

Features are whole-clip maps from the `FeatureStore`; each training step cuts one random
window-sized crop per clip, so every epoch sees different stretches of each recording.
Validation scores every window of a clip at the daemon's hop and averages their
probabilities, the whole-file rule `streamemo classify` uses, and reports clip-level UA.

Runs on one process, or under `torchrun` as DistributedDataParallel (gloo on CPU, nccl on
CUDA): each rank takes its share of every epoch's batches; weights stay identical across
ranks, so every rank computes the same validation figures and takes the same decisions
(learning rate, early stop) without extra messages; rank 0 alone writes files.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from streamemo import StreamemoError
from streamemo.features import pick_device
from streamemo.model import Model
from streamemo.train.augment import WaveAugmenter
from streamemo.train.batches import Batches, class_weights, crops_at_hop
from streamemo.train.cache import FeatureRecipe, FeatureStore
from streamemo.train.datasets import Clip, label_set
from streamemo.train.ensemble import fit_ensemble
from streamemo.train.metrics import classification_metrics
from streamemo.train.recipe import DAEMON, TrainConfig, resolved_arch_params, watches_validation, window_frames
from streamemo.train.selection import WeightSelection
from streamemo.train.sessions import SpeakerSessions, split_validation

log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    model: Model
    history: list[dict]  # one dict per epoch: loss, acc, val_loss, val_ua, lr, seconds
    labels: list[str]
    train_clips: list[Clip]
    val_clips: list[Clip]
    skipped: list[str]  # unreadable files, "path: why"
    chosen: str  # which weights came back, in words
    seconds: float


def model_labels(clips: list[Clip], init: Model | None = None) -> list[str]:
    """The classes a model trained on `clips` predicts; fine-tuning keeps the initial model's
    classes in their places and appends any it lacks."""
    labels = label_set(clips)
    if init is None:
        return labels
    return init.labels + [label for label in labels if label not in init.labels]


def fine_tuning(config: TrainConfig, init: Model) -> TrainConfig:
    """The recipe for fine-tuning `init`: its frontend, window and network, whatever the recipe
    names (features must be the ones its network takes: `--init models/small` under the default
    recipe computed encoder features for a log-mel network and crashed); the rest as given."""
    arch, params = init.arch, init.arch_params
    if arch == "ensemble":  # its members' network: each member fine-tunes one of them (ensemble.py)
        arch, params = params["member_arch"], params.get("member_params") or {}
    return replace(config, frontend=init.frontend, window_s=init.window_s, arch=arch, arch_params=dict(params))


def _distributed(cuda: bool) -> tuple[int, int]:
    """(rank, world size); initialises the process group when run under torchrun: nccl for
    CUDA tensors, gloo for CPU ones (also on a GPU machine told `--device cpu`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        backend = "nccl" if cuda else "gloo"
        torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank(), world


def copy_augmenters(config: TrainConfig, cache_dir) -> list[tuple[WaveAugmenter, int]]:
    """(augmenter, copy number) of each cached waveform copy (TrainConfig.copy_augments), one
    augmenter per distinct augmentation: its rooms and noise load once."""
    plans = config.copy_augments()
    made = {augment: WaveAugmenter(augment, cache_dir) for augment in dict.fromkeys(a for a, _ in plans)}
    return [(made[augment], k) for augment, k in plans]


class Trainer:
    def __init__(self, config: TrainConfig, cache_dir=None, use_cache: bool = True):
        self.config = config
        self.device = pick_device(config.device, "--device")
        self.rank, self.world = _distributed(self.device.type == "cuda")
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.rank % torch.cuda.device_count())
        if config.threads:
            torch.set_num_threads(config.threads)
        self.window_samples = round(config.window_s * config.frontend.sample_rate)
        self.store = FeatureStore(FeatureRecipe(config.frontend, self.window_samples, config.trim), cache_dir,
                                  use_cache)
        self.width = window_frames(config)
        self.hop_samples = round(DAEMON.hop_s * config.frontend.sample_rate)
        self.hop = self.hop_samples // config.frontend.hop_length  # in frames

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    def _progress(self, iterable, **kw):
        return tqdm(iterable, disable=not (self.config.progress and self.main_process), leave=False, **kw)

    def fit(self, clips: list[Clip], name: str = "model", init: Model | None = None,
            val_clips: list[Clip] | None = None) -> TrainResult:
        """Trains on `clips`; validation is `val_clips`, or carved from `clips`' speakers."""
        cfg = self.config
        if cfg.ensemble > 1:
            return fit_ensemble(self, clips, name, init, val_clips)
        started = time.perf_counter()
        torch.manual_seed(cfg.seed)
        if val_clips is None:
            train_clips, val_clips = split_validation(clips, cfg.val_fraction, cfg.seed)
        else:
            train_clips = clips
        if not train_clips:
            raise StreamemoError("no training clips left after holding out validation speakers", 1)
        if not val_clips and watches_validation(cfg) and self.main_process:
            log.warning("no validation speakers (too few per corpus): the schedule, early stopping and "
                        "the best epoch follow training accuracy instead")
        labels = model_labels(train_clips, init)
        if init is not None and labels != init.labels and self.main_process:
            log.info("--init model has no class for %s: its output layer grows to %s, the classes it knows "
                     "keep their weights", ", ".join(labels[len(init.labels):]), ", ".join(labels))
        index = {label: i for i, label in enumerate(labels)}

        train_clips, train_feats, skipped = self.store.get_many(train_clips, "train features",
                                                                progress=cfg.progress and self.main_process)
        val_clips, val_feats, val_skipped = self.store.get_many(val_clips, "validation features",
                                                                progress=cfg.progress and self.main_process)
        skipped += val_skipped
        copies = self._augmented_copies(train_clips)
        y = np.array([index[c.label] for c in train_clips])
        y_val = np.array([index[c.label] for c in val_clips])

        model = self._initial_model(name, labels, init)
        sessions = None
        if cfg.speaker_norm:
            sessions = self._speaker_sessions(train_clips, val_clips, val_feats, init)
            model.speaker_norm = sessions.ref
        if init is None:
            self._fit_normalisation(model, train_feats if sessions is None else [
                sessions.normalise(f[None], [i])[0] for i, f in enumerate(train_feats)])
        network = model.network.to(self.device)
        trainable = network
        if self.world > 1:
            trainable = torch.nn.parallel.DistributedDataParallel(
                network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        optimizer = self._optimizer(network)
        plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                              patience=cfg.plateau_patience)
                   if cfg.schedule == "plateau" else None)
        batches = Batches(cfg, train_clips, train_feats, copies, y, len(labels), self.width, sessions)
        weights = class_weights(y, len(labels), batches.draw).to(self.device) if cfg.class_weighting else None
        rng = np.random.default_rng(cfg.seed)  # same stream on every rank: same permutations
        # Session sampling draws per example, so per rank: its own stream keeps `rng` in step.
        session_rng = np.random.default_rng([cfg.seed, 7, self.rank])
        gen = torch.Generator().manual_seed(cfg.seed + 1000 * self.rank)

        history, keep = [], WeightSelection(cfg)
        steps_per_epoch = max(1, math.ceil(len(y) / (cfg.batch_size * self.world)))
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            if plateau is None:
                self._set_cosine_lr(optimizer, epoch, cfg.epochs)
            trainable.train()
            order, starts, pick = batches.epoch(rng)
            shard = order[self.rank :: self.world]
            total_loss, total_correct, seen = 0.0, 0, 0
            bar = self._progress(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
            for step in bar:
                batch = shard[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                if len(batch) == 0:  # uneven shards: every rank must still take every step
                    batch = shard[: cfg.batch_size]
                x, target, allowed = batches.make(batch, starts, pick, session_rng, gen)
                loss, correct = self._step(trainable, optimizer, x.to(self.device), target.to(self.device),
                                           weights, gen, None if allowed is None else allowed.to(self.device))
                total_loss += loss * len(batch)
                total_correct += correct
                seen += len(batch)
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{total_correct / seen:.2f}")
            if self.world > 1:  # BatchNorm statistics drift per rank: use rank 0's everywhere
                for buffer in network.buffers():
                    torch.distributed.broadcast(buffer, 0)
            val = self.validate(network, val_feats, y_val, len(labels)) if len(y_val) else {}
            record = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "acc": total_correct / max(seen, 1),
                      "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0, **val}
            history.append(record)
            if not math.isfinite(record["loss"]):  # weights gone to NaN or infinity train nothing from here on
                raise StreamemoError(f"training diverged: the loss is {record['loss']} in epoch {epoch + 1}"
                                     + (" (the --init model gives non-finite outputs: start from another)"
                                        if init is not None else " (try a lower --lr)") + "; no model was written", 1)
            if self.main_process:
                log.info("epoch %d: loss %.3f acc %.3f val_loss %s val_ua %s (%.1f s)", epoch + 1, record["loss"],
                         record["acc"], _fmt(val.get("val_loss")), _fmt(val.get("val_ua")), record["seconds"])
            score = val.get("val_ua", record["acc"])
            if plateau is not None:
                plateau.step(score)
            keep.update(epoch, score, network)
            if cfg.early_stop and keep.stale >= cfg.early_stop:
                log.info("early stop: no validation improvement for %d epochs", keep.stale)
                break

        chosen = keep.apply(network, len(history))
        network.eval()
        model.network = network.cpu()
        return TrainResult(model, history, labels, train_clips, val_clips, skipped, chosen,
                           time.perf_counter() - started)

    # --- pieces -------------------------------------------------------------------------

    def _initial_model(self, name: str, labels: list[str], init: Model | None) -> Model:
        cfg = self.config
        if init is not None:
            if init.frontend != cfg.frontend or abs(init.window_s - cfg.window_s) > 1e-9:
                raise ValueError("a Trainer that fine-tunes needs the model's own recipe: fine_tuning(config, init)")
            model = Model.create(name, labels, init.window_s, init.frontend, init.arch, init.arch_params)
            state = model.network.state_dict()
            for key, value in init.network.state_dict().items():
                # Only the label count differs between the two networks, so a tensor of another
                # shape is the output layer's (one row per class): the known classes' rows carry over.
                if value.shape != state[key].shape:
                    state[key][: len(init.labels)] = value
                else:
                    state[key] = value
            model.network.load_state_dict(state)
            return model
        return Model.create(name, labels, cfg.window_s, cfg.frontend, cfg.arch, resolved_arch_params(cfg))

    def _augmented_copies(self, clips: list[Clip]) -> list[list[np.ndarray]]:
        cfg = self.config
        plans = copy_augmenters(cfg, self.store.cache_dir)
        if not plans:
            return [[] for _ in clips]
        per_copy = []
        for n, (augmenter, k) in enumerate(plans, 1):
            kept, feats, _ = self.store.get_many(clips, f"augmented copy {n}", augment=augmenter, copy=k,
                                                 progress=cfg.progress and self.main_process)
            # A file that read once reads again; keep the alignment strict anyway.
            assert len(kept) == len(clips)
            per_copy.append(feats)
        return [list(c) for c in zip(*per_copy)]

    def _speaker_sessions(self, clips, val_clips, val_feats, init: Model | None) -> SpeakerSessions:
        """Measures every clip's voice as the daemon would (voiced windows at its hop; whole-clip
        statistics differ enough to cost accuracy) and normalises the validation features,
        in place, with their speakers' full statistics: validation figures are those of a
        daemon that has heard each speaker for a while."""
        cfg = self.config
        if cfg.frontend.kind == "mfcc":  # pauses are told from voice by log-mel energy
            raise StreamemoError(f"speaker normalisation needs log-mel or encoder features, not {cfg.frontend.kind}; "
                                 "train with --no-speaker-norm", 2)
        every = clips + val_clips
        heard = [self.store.voice(c, self.window_samples, self.hop_samples, DAEMON)
                 for c in self._progress(every, desc="speaker statistics", unit="clip")]
        prior = DAEMON.adaptation_prior_s / cfg.frontend.frame_s
        ref = init.speaker_norm if init is not None and init.speaker_norm is not None else None
        sessions = SpeakerSessions(every, heard, prior, ref, reference_from=len(clips))
        for i, clip in enumerate(val_clips):
            val_feats[i] = sessions.normalise(val_feats[i][None], [len(clips) + i])[0]
        return sessions

    @staticmethod
    def _fit_normalisation(model: Model, feats: list[np.ndarray]) -> None:
        """Per-band mean and std over every frame of the training clips: one global
        statistic, so loudness differences between clips survive normalisation."""
        # Summed clip by clip: all frames at once in float64 would be gigabytes for an encoder's features.
        frames = sum(f.shape[1] for f in feats)
        total = sum(f.sum(axis=1, dtype=np.float64) for f in feats)
        mean = total / frames
        var = sum(np.square(f.astype(np.float64) - mean[:, None]).sum(axis=1) for f in feats) / frames
        norm = model.network.norm
        norm.mean.copy_(torch.from_numpy(mean).float())
        norm.std.copy_(torch.from_numpy(np.sqrt(var) + 1e-5).float())

    def _optimizer(self, network: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(network.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                                   nesterov=True)
        raise StreamemoError(f"unknown optimizer {cfg.optimizer!r}; expected adamw or sgd", 2)

    def _set_cosine_lr(self, optimizer, epoch: int, epochs: int) -> None:
        cfg = self.config
        if epoch < cfg.warmup_epochs:
            lr = cfg.lr * (epoch + 1) / (cfg.warmup_epochs + 1)
        else:
            progress = (epoch - cfg.warmup_epochs) / max(1, epochs - cfg.warmup_epochs)
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr

    def _step(self, network, optimizer, x, target, weights, gen, allowed=None) -> tuple[float, int]:
        """One optimiser step; `allowed` (batch, classes) limits each example's softmax to
        those classes (a mixed pair: to either's)."""
        cfg = self.config
        if cfg.mixup > 0:
            lam = float(torch.distributions.Beta(cfg.mixup, cfg.mixup).sample())
            perm = torch.randperm(len(x), generator=gen).to(x.device)
            logits = network(lam * x + (1 - lam) * x[perm])
            if allowed is not None:
                logits = logits.masked_fill(~(allowed | allowed[perm]), float("-inf"))
            loss = lam * F.cross_entropy(logits, target, weight=weights, label_smoothing=cfg.label_smoothing) + (
                1 - lam) * F.cross_entropy(logits, target[perm], weight=weights, label_smoothing=cfg.label_smoothing)
        else:
            logits = network(x)
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
            loss = F.cross_entropy(logits, target, weight=weights, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
        optimizer.step()
        return float(loss.detach()), int((logits.argmax(1) == target).sum())

    @torch.no_grad()
    def validate(self, network, feats: list[np.ndarray], y: np.ndarray, n_classes: int) -> dict:
        """Clip-level figures: each clip's windows at the daemon's hop, probabilities averaged."""
        network.eval()
        probs = []
        for f in feats:
            logits = network(torch.from_numpy(crops_at_hop(f, self.width, self.hop)).to(self.device))
            p = torch.softmax(logits.float(), dim=1).mean(0).cpu()
            probs.append(p)
        p = torch.stack(probs)
        loss = float(F.nll_loss(torch.log(p + 1e-8), torch.from_numpy(y)))
        m = classification_metrics(y, p.argmax(1).numpy(), n_classes)
        return {"val_loss": loss, "val_ua": m["ua"], "val_wa": m["wa"]}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
