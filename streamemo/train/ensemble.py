"""Ensembles: N networks of one recipe, seeds seed..seed+N-1, shipped as one model that
averages their probabilities (`model.Ensemble`)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from streamemo.model import Model
from streamemo.train.sessions import split_validation

log = logging.getLogger(__name__)


def fit_ensemble(trainer, clips, name, init, val_clips):
    """Trains each member as a model of its own with `trainer`'s recipe (same clips and
    validation speakers, seeds seed, seed+1, ...), then packs them into one `Ensemble` model."""
    from streamemo.train.trainer import Trainer, TrainResult  # the trainer calls this module

    cfg = trainer.config
    if val_clips is None:  # one split for every member, chosen by the ensemble's seed
        clips, val_clips = split_validation(clips, cfg.val_fraction, cfg.seed)
    results = []
    for k in range(cfg.ensemble):
        if trainer.main_process:
            log.info("ensemble member %d of %d (seed %d)", k + 1, cfg.ensemble, cfg.seed + k)
        member = Trainer(replace(cfg, ensemble=1, seed=cfg.seed + k), trainer.store.cache_dir, trainer.store.use_cache)
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
