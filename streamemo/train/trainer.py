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

import copy
import inspect
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from streamemo import StreamemoError
from streamemo.config import PipelineConfig
from streamemo.features import FrontendSpec, pick_device
from streamemo.model import Model
from streamemo.stream.adaptation import (
    BandStats,
    VoiceStats,
    affine,
    reference_stats,
    shrunk,
)
from streamemo.train.augment import AugmentConfig, WaveAugmenter, spec_augment
from streamemo.train.cache import FeatureRecipe, FeatureStore
from streamemo.train.datasets import Clip, label_set
from streamemo.train.metrics import classification_metrics

log = logging.getLogger(__name__)

DAEMON = PipelineConfig()  # the daemon's defaults: validation and voice statistics use its hop and gate


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "cnn_lstm"
    arch_params: dict = field(default_factory=dict)  # empty: the network's defaults
    window_s: float = 2.0
    # 20 ms frames (not the stock 10 ms): half the frames, half the frontend and network cost
    # per window, and prosody, the main emotion cue, changes far slower than that.
    frontend: FrontendSpec = FrontendSpec(hop_length=320)
    trim: bool = False  # trim leading/trailing silence before features
    # UA on the six RAVDESS folds at 60 / 90 / 120 epochs: seed 0 61.8 / 63.7 / 66.2, seed 1
    # 62.0 / 64.1 / 64.1; seed 2 at 120: 65.7 (benchmarks/RESULTS-train.md).
    epochs: int = 120
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 3e-3
    weight_decay: float = 1e-2
    schedule: str = "cosine"  # cosine | plateau
    plateau_patience: int = 3  # epochs without val improvement before the LR is cut
    plateau_factor: float = 0.5
    warmup_epochs: int = 2
    early_stop: int = 0  # stop after this many epochs without val improvement; 0 = never
    select: str = "last"  # best (val UA) | last: which epoch's weights are returned
    average_last: int = 5  # with select "last", >0: the average of the last N epochs' weights
    class_weighting: bool = True  # loss weights inverse to class frequency (as sampled)
    # How often each corpus's clips are drawn per epoch: its share of draws is proportional to
    # its size to this power (1: as many draws as clips, every clip once an epoch; 0.5: to
    # the square root of its size; 0: every corpus alike). Below 1, a small corpus's clips
    # are drawn more than once an epoch and a large one's less.
    corpus_sampling_power: float = 1.0
    label_smoothing: float = 0.0
    mixup: float = 0.2  # Beta(a, a) mixup of pairs of examples; 0 = off
    augment: AugmentConfig = AugmentConfig()
    spec_augment: bool = True
    wave_copies: int = 2  # augmented waveform copies per training clip (cached); 0 = off
    # >1: train this many networks with seeds seed, seed+1, ... and ship them as one
    # `model.Ensemble` that averages their probabilities (+1.1 to 1.5 points UA over either
    # seed at 90 epochs; at 120, 66.2 like seed 0 with a tighter spread), at twice the cost
    # per window.
    ensemble: int = 1
    # Map each speaker's feature bands onto the average speaker's mean and spread
    # (stream/adaptation.py), with statistics as the daemon would hold them partway through a
    # session with that speaker (`SpeakerSessions`); the daemon adapts the same way live.
    speaker_norm: bool = True
    # Share of each corpus's training speakers held out to watch a validation figure. The
    # weights kept (average of the last epochs) never depend on it, so by default every
    # speaker trains (benchmarks/RESULTS-train.md, recipe 5).
    val_fraction: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    progress: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frontend"] = self.frontend.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["frontend"] = FrontendSpec.from_dict(data.get("frontend", {}))
        data["augment"] = AugmentConfig.from_dict(data.get("augment", {}))
        return cls(**data)


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


def watches_validation(cfg: TrainConfig) -> bool:
    """Whether the recipe decides anything by a validation figure."""
    return cfg.select == "best" or cfg.schedule == "plateau" or cfg.early_stop > 0


def split_validation(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Holds out whole speakers: per corpus, `fraction` of its speakers (at least one when it
    has three or more), picked with `seed`. Returns (train, validation)."""
    rng = np.random.default_rng(seed)
    val_speakers: set[str] = set()
    for corpus in sorted({c.corpus for c in clips}):
        speakers = sorted({c.speaker for c in clips if c.corpus == corpus})
        n = round(fraction * len(speakers))
        if n == 0 and len(speakers) >= 3 and fraction > 0:
            n = 1
        val_speakers |= set(rng.permutation(speakers)[:n].tolist())
    return [c for c in clips if c.speaker not in val_speakers], [c for c in clips if c.speaker in val_speakers]


def corpus_draw_probabilities(clips: list[Clip], power: float) -> np.ndarray | None:
    """Per clip, its probability of being drawn (summing to 1) when each corpus's share is
    proportional to its size to `power`; None for power 1, where every clip is drawn once
    an epoch in a random order."""
    if power == 1.0:
        return None
    corpora = [c.corpus for c in clips]
    sizes = {name: corpora.count(name) for name in set(corpora)}
    total = sum(n**power for n in sizes.values())
    return np.array([sizes[name] ** power / total / sizes[name] for name in corpora])


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


def window_frames(config: TrainConfig) -> int:
    return config.frontend.frames(round(config.window_s * config.frontend.sample_rate))


def crops_at_hop(feats: np.ndarray, width: int, hop: int) -> np.ndarray:
    """(n_windows, F, width): the windows the daemon would score (starts 0, hop, 2*hop…)."""
    t = feats.shape[1]
    starts = [0] if t <= width else list(range(0, t - width + 1, hop))
    return np.stack([feats[:, s : s + width] for s in starts])


class Trainer:
    def __init__(self, config: TrainConfig, cache_dir=None, use_cache: bool = True):
        self.config = config
        self.device = pick_device(config.device)
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
            return self._fit_ensemble(clips, name, init, val_clips)
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
        draw = corpus_draw_probabilities(train_clips, cfg.corpus_sampling_power)
        weights = None
        if cfg.class_weighting:  # inverse to each class's share of the draws
            draws = np.bincount(y, weights=None if draw is None else draw * len(y), minlength=len(labels))
            weights = torch.tensor(len(y) / (len(labels) * np.maximum(draws, 1)), dtype=torch.float32,
                                   device=self.device)
        rng = np.random.default_rng(cfg.seed)  # same stream on every rank: same permutations
        # Session sampling draws per example, so per rank: its own stream keeps `rng` in step.
        session_rng = np.random.default_rng([cfg.seed, 7, self.rank])
        gen = torch.Generator().manual_seed(cfg.seed + 1000 * self.rank)

        history, best_ua, best_state, stale = [], -1.0, None, 0
        averaged, n_averaged = None, 0
        steps_per_epoch = max(1, math.ceil(len(y) / (cfg.batch_size * self.world)))
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            if plateau is None:
                self._set_cosine_lr(optimizer, epoch, cfg.epochs)
            trainable.train()
            order = rng.permutation(len(y)) if draw is None else rng.choice(len(y), len(y), p=draw)
            starts = rng.random(len(y))  # crop position per clip, as a fraction of the slack
            pick = rng.integers(0, cfg.wave_copies + 1, len(y))  # 0 = original, k = copy k
            shard = order[self.rank :: self.world]
            total_loss, total_correct, seen = 0.0, 0, 0
            bar = self._progress(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
            for step in bar:
                batch = shard[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                if len(batch) == 0:  # uneven shards: every rank must still take every step
                    batch = shard[: cfg.batch_size]
                x = np.stack([self._crop(copies[i][pick[i] - 1] if pick[i] else train_feats[i], starts[i])
                              for i in batch])
                if sessions is not None:
                    x = sessions.normalise(x, batch, session_rng)
                x = torch.from_numpy(x)
                target = torch.from_numpy(y[batch])
                if cfg.spec_augment:
                    x = spec_augment(x, cfg.augment, gen)
                x, target = x.to(self.device), target.to(self.device)
                loss, correct = self._step(trainable, optimizer, x, target, weights, gen)
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
            if self.main_process:
                log.info("epoch %d: loss %.3f acc %.3f val_loss %s val_ua %s (%.1f s)", epoch + 1, record["loss"],
                         record["acc"], _fmt(val.get("val_loss")), _fmt(val.get("val_ua")), record["seconds"])
            score = val.get("val_ua", record["acc"])
            if plateau is not None:
                plateau.step(score)
            if score > best_ua:
                best_ua, best_state, stale = score, copy.deepcopy(network.state_dict()), 0
            else:
                stale += 1
            if cfg.average_last and epoch >= cfg.epochs - cfg.average_last:
                averaged, n_averaged = _running_average(averaged, network.state_dict(), n_averaged)
            if cfg.early_stop and stale >= cfg.early_stop:
                log.info("early stop: no validation improvement for %d epochs", stale)
                break

        if cfg.select == "best" and best_state is not None:
            network.load_state_dict(best_state)
            chosen = f"best validation epoch ({best_ua:.3f} UA)"
        elif cfg.average_last and averaged is not None:
            network.load_state_dict(averaged)
            chosen = f"average of the last {n_averaged} epochs"
        else:
            chosen = f"last epoch ({len(history)})"
        network.eval()
        model.network = network.cpu()
        return TrainResult(model, history, labels, train_clips, val_clips, skipped, chosen,
                           time.perf_counter() - started)

    def _fit_ensemble(self, clips, name, init, val_clips) -> TrainResult:
        """Trains each member as a model of its own (same clips and validation speakers,
        seeds seed, seed+1, ...), then packs them into one `Ensemble` model."""
        cfg = self.config
        if val_clips is None:  # one split for every member, chosen by the ensemble's seed
            clips, val_clips = split_validation(clips, cfg.val_fraction, cfg.seed)
        results = []
        for k in range(cfg.ensemble):
            if self.main_process:
                log.info("ensemble member %d of %d (seed %d)", k + 1, cfg.ensemble, cfg.seed + k)
            member = Trainer(replace(cfg, ensemble=1, seed=cfg.seed + k), self.store.cache_dir, self.store.use_cache)
            results.append(member.fit(clips, name, _member_init(init, k), val_clips))
        first = results[0]
        params = {"member_arch": first.model.arch, "member_params": first.model.arch_params, "members": cfg.ensemble}
        model = Model.create(name, first.labels, first.model.window_s, first.model.frontend, "ensemble", params)
        model.speaker_norm = first.model.speaker_norm
        for member, result in zip(model.network.members, results, strict=True):
            member.load_state_dict(result.model.network.state_dict())
        model.network.eval()
        return TrainResult(model, mean_history([r.history for r in results]), first.labels, first.train_clips, first.val_clips,
                           sorted({s for r in results for s in r.skipped}),
                           f"{cfg.ensemble} members' {first.chosen} each", sum(r.seconds for r in results))

    # --- pieces -------------------------------------------------------------------------

    def _initial_model(self, name: str, labels: list[str], init: Model | None) -> Model:
        cfg = self.config
        if init is not None:
            # Fine-tuning keeps the initial model's frontend, window and architecture.
            if init.frontend != cfg.frontend or abs(init.window_s - cfg.window_s) > 1e-9:
                log.warning("--init model's frontend/window differ from the config: using the model's")
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
        if cfg.wave_copies <= 0:
            return [[] for _ in clips]
        augmenter = WaveAugmenter(cfg.augment, self.store.cache_dir)
        per_copy = []
        for k in range(cfg.wave_copies):
            kept, feats, _ = self.store.get_many(clips, f"augmented copy {k + 1}", augment=augmenter, copy=k,
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
        if cfg.frontend.kind != "logmel":  # pauses are told from voice by log-mel energy
            raise StreamemoError(f"speaker normalisation needs log-mel features, not {cfg.frontend.kind}; "
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
        allf = np.concatenate(feats, axis=1).astype(np.float64)
        norm = model.network.norm
        norm.mean.copy_(torch.from_numpy(allf.mean(axis=1)).float())
        norm.std.copy_(torch.from_numpy(allf.std(axis=1) + 1e-5).float())

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

    def _crop(self, feats: np.ndarray, where: float) -> np.ndarray:
        t = feats.shape[1]
        if t <= self.width:  # store pads clips to one window, but be safe
            return np.pad(feats, ((0, 0), (0, self.width - t)), mode="edge")
        s = int(where * (t - self.width + 1))
        return feats[:, s : s + self.width]

    def _step(self, network, optimizer, x, target, weights, gen) -> tuple[float, int]:
        cfg = self.config
        if cfg.mixup > 0:
            lam = float(torch.distributions.Beta(cfg.mixup, cfg.mixup).sample())
            perm = torch.randperm(len(x), generator=gen).to(x.device)
            logits = network(lam * x + (1 - lam) * x[perm])
            loss = lam * F.cross_entropy(logits, target, weight=weights, label_smoothing=cfg.label_smoothing) + (
                1 - lam) * F.cross_entropy(logits, target[perm], weight=weights, label_smoothing=cfg.label_smoothing)
        else:
            logits = network(x)
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


class SpeakerSessions:
    """Speaker normalisation on the training side.

    Each training crop is normalised with the statistics the daemon would hold partway
    through a session with its speaker: its own clip plus a random number of that speaker's
    other clips, shrunk towards the reference by the daemon's prior. Trained so, the network
    copes with a session's early clips as well as with its fiftieth (trained on each
    speaker's full statistics only, it lost most of the gain live). Without a random
    generator, `normalise` uses all of the speaker's clips.

    Not modelled: the daemon's forgetting (sessions here are minutes, its memory ten), and
    that within a session's first clip it has heard only part of that clip. Augmented copies
    are normalised with their clean clip's statistics.
    """

    def __init__(self, clips: list[Clip], heard: list[VoiceStats], prior_frames: float,
                 ref: BandStats | None = None, reference_from: int | None = None):
        self.prior_frames = prior_frames
        self.heard = heard
        self.members: dict[str, list[int]] = {}
        for i, clip in enumerate(clips):
            self.members.setdefault(clip.speaker, []).append(i)
        self.speaker_of = [c.speaker for c in clips]
        self.full = {s: VoiceStats.total([heard[i] for i in idx]) for s, idx in self.members.items()}
        if ref is None:  # the average of the speakers among the first `reference_from` clips
            speakers = {c.speaker for c in clips[:reference_from]}
            measured = [self.full[s].stats() for s in sorted(speakers) if self.full[s].frames > 0]
            if not measured:
                raise StreamemoError("no training clip has a voiced window to measure its speaker on (silent or "
                                     "very quiet recordings?); check the data, or train with --no-speaker-norm", 1)
            ref = reference_stats(measured)
        self.ref = ref

    def normalise(self, x: np.ndarray, items, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, F, T) maps of clips `items` -> normalised, float32."""
        out = np.empty(x.shape, dtype=np.float32)
        for k, i in enumerate(items):
            speaker = self.speaker_of[i]
            if rng is None:
                heard = self.full[speaker]
            else:
                others = [j for j in self.members[speaker] if j != i]
                earlier = rng.choice(others, rng.integers(0, len(others) + 1), replace=False) if others else []
                heard = VoiceStats.total([self.heard[i], *(self.heard[j] for j in earlier)])
            scale, shift = affine(shrunk(self.ref, heard, self.prior_frames), self.ref)
            out[k] = x[k] * scale[:, None] + shift[:, None]
        return out


def _member_init(init: Model | None, k: int) -> Model | None:
    """The model ensemble member k fine-tunes from: init's own member k (cycling) when init is
    an ensemble, else init itself."""
    if init is None or init.arch != "ensemble":
        return init
    members = init.network.members
    params = init.arch_params
    model = Model.create(init.name, init.labels, init.window_s, init.frontend, params["member_arch"],
                         params.get("member_params"))
    model.network.load_state_dict(members[k % len(members)].state_dict())
    model.speaker_norm = init.speaker_norm
    return model


def mean_history(histories: list[list[dict]]) -> list[dict]:
    """The training curves of an ensemble: each epoch's figures averaged over its members."""
    return [{key: float(np.mean([h[i][key] for h in histories])) for key in histories[0][i]}
            for i in range(min(len(h) for h in histories))]


def resolved_arch_params(config: TrainConfig) -> dict:
    """The recipe's architecture parameters with the network's defaults filled in, so the
    card rebuilds the same network even if those defaults change later."""
    from streamemo.model import ARCHITECTURES

    if config.arch not in ARCHITECTURES:
        raise StreamemoError(f"unknown architecture {config.arch!r}; expected one of {', '.join(ARCHITECTURES)}", 2)
    skip = {"self", "n_features", "n_classes"}
    signature = inspect.signature(ARCHITECTURES[config.arch].__init__)
    params = {k: p.default for k, p in signature.parameters.items() if k not in skip}
    params.update(config.arch_params)
    return json.loads(json.dumps(params))  # tuples -> lists, as the card will hold them


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


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def with_overrides(config: TrainConfig, **changes) -> TrainConfig:
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
