"""The training recipe: every choice that shapes a trained model, in one frozen config.
Defaults are the shipped model's recipe; `streamemo train --help` shows them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from streamemo.config import PipelineConfig
from streamemo.features import FrontendSpec
from streamemo.train.augment import AugmentConfig

DAEMON = PipelineConfig()  # the daemon's defaults: validation and voice statistics use its hop and gate


def whisper_frontend() -> FrontendSpec:
    """The default model's frontend: Whisper tiny.en's first two layers, in blocks of 0.24 s
    (the daemon's hop) with 0.48 s of context (benchmarks/RESULTS-train.md, session 15)."""
    from streamemo.encoder.frontend import encoder_spec

    return encoder_spec("whisper-tiny.en-2", layers=2, block_frames=12, context_frames=24)


@dataclass(frozen=True)
class TrainConfig:
    # A CNN-LSTM head over a frozen pretrained encoder's features (networks.EncoderHead).
    arch: str = "encoder_head"
    arch_params: dict = field(default_factory=dict)
    window_s: float = 1.92  # 8 encoder blocks: a window ends on a block at every hop
    frontend: FrontendSpec = field(default_factory=whisper_frontend)
    trim: bool = False  # trim leading/trailing silence before features
    # Each epoch draws ~10,000 examples from the seven corpora, each from its cached features
    # (13 minutes a leave-one-corpus-out fold on one core, scoring included).
    epochs: int = 12
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
    corpus_sampling_power: float = 0.5
    # Each clip's softmax only over the classes its corpus has: a corpus without disgust
    # (ASED, TurEV, the Korean sample) then never teaches "this corpus's room, microphone or
    # language means not disgust", a prior that misleads on every other corpus.
    corpus_classes_only: bool = False
    label_smoothing: float = 0.0
    mixup: float = 0.2  # Beta(a, a) mixup of pairs of examples; 0 = off
    # The waveform copies also go through simulated rooms, real background noise and
    # microphones/codecs: a pretrained encoder has the capacity for them (the small network had not).
    augment: AugmentConfig = AugmentConfig(room=True, background=True, channel=True)
    spec_augment: bool = True
    wave_copies: int = 2  # augmented waveform copies per training clip (cached); 0 = off
    # Further copies that always pass through the recipe's simulated rooms and background noise
    # (the rest of `augment` as drawn): more of the far-field, noisy voice the daemon hears, without
    # taking draws from the clean originals as raising `room_p` and `background_p` does.
    degraded_copies: int = 0
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

    def copy_augments(self) -> list[tuple[AugmentConfig, int]]:
        """(augmentation, copy number) of each cached waveform copy, in the order `Batches`
        numbers them from 1: the `wave_copies`, then the `degraded_copies`."""
        degraded = replace(self.augment, room_p=1.0, background_p=1.0)  # where the recipe has rooms and noise
        return ([(self.augment, k) for k in range(self.wave_copies)]
                + [(degraded, k) for k in range(self.degraded_copies)])

    @classmethod
    def small(cls, **changes) -> TrainConfig:
        """The small model's recipe (`models/small`): log-mel straight into a 2D CNN-LSTM,
        for boards without the CPU for an encoder."""
        return cls(**{**SMALL, **changes})

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


# What the small model's recipe changes from the default one.
SMALL = dict(
    arch="cnn_lstm",
    # Convolutions valid in time, so the daemon computes each frame and column once
    # (stream/columns.py); six RAVDESS folds: UA 63.9 against 63.5 with "same" (RESULTS-train.md).
    arch_params={"time_padding": "valid"},
    window_s=2.0,
    # 20 ms frames (not the stock 10 ms): half the frames, half the frontend and network cost
    # per window, and prosody, the main emotion cue, changes far slower than that.
    frontend=FrontendSpec(hop_length=320),
    # UA on the six RAVDESS folds at 60 / 90 / 120 epochs: seed 0 61.8 / 63.7 / 66.2, seed 1
    # 62.0 / 64.1 / 64.1; seed 2 at 120: 65.7 (benchmarks/RESULTS-train.md).
    epochs=120,
    corpus_sampling_power=1.0,
    augment=AugmentConfig(),
)
RECIPES = {"default": TrainConfig, "small": TrainConfig.small}


def watches_validation(cfg: TrainConfig) -> bool:
    """Whether the recipe decides anything by a validation figure."""
    return cfg.select == "best" or cfg.schedule == "plateau" or cfg.early_stop > 0


def window_frames(config: TrainConfig) -> int:
    return config.frontend.frames(round(config.window_s * config.frontend.sample_rate))


def resolved_arch_params(config: TrainConfig) -> dict:
    """The recipe's architecture parameters with the network's defaults filled in, so the
    card rebuilds the same network even if those defaults change later."""
    from streamemo.networks import resolved_params

    return resolved_params(config.arch, config.arch_params)
