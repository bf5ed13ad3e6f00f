"""A reload (SIGHUP): what it may change in a running daemon, building the new model and
pipeline, and putting them to work.

A reload swaps the model, the pipeline settings, the log level, the status interval and
re-reads the allowed-clients folder. Settings bound to resources opened at start (the audio
source, the publisher's socket and keys, the torch device and thread count) keep their
running values: the daemon says which changed settings wait for a restart.
"""

from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass, fields, replace

import torch

from streamemo.config import LISTS, Config
from streamemo.model import Model, load_model
from streamemo.stream.pipeline import Pipeline
from streamemo.stream.processor import Processor

# (section, key) pairs that only a restart applies.
RESTART_ONLY = {
    ("audio", None),  # the whole section: the source is open
    ("publish", "bind"),
    ("publish", "hwm"),
    ("publish", "wait_subscriber_s"),
    ("security", None),  # the socket's keys; the clients folder's *contents* are re-read anyway
    ("pipeline", "device"),
    ("pipeline", "threads"),
}


def plan_reload(running: Config, new: Config) -> tuple[Config, list[str]]:
    """(the config to run with now, the changed keys that wait for a restart)."""
    effective, waiting = new, []
    for section in fields(Config):
        old_part, new_part = getattr(running, section.name), getattr(new, section.name)
        if section.name in LISTS:  # [[trigger]]: the watcher's, which the daemon never reads
            continue
        keys = [f.name for f in fields(old_part)]
        for key in keys:
            if not _restart_only(section.name, key):
                continue
            if getattr(old_part, key) != getattr(new_part, key):
                waiting.append(f"{section.name}.{key}")
            new_part = replace(new_part, **{key: getattr(old_part, key)})
        effective = replace(effective, **{section.name: new_part})
    return effective, waiting


def _restart_only(section: str, key: str) -> bool:
    return (section, None) in RESTART_ONLY or (section, key) in RESTART_ONLY


@dataclass
class Reload:
    """A reload that passed every check, ready to swap in (`swap`)."""

    config: Config  # the config to run with from now on (`plan_reload`)
    waiting: list[str]  # changed settings that need a restart
    model: Model
    pipeline: Pipeline  # the new model's pipeline: tested, not yet fed


def prepare(running: Config, new: Config, pipeline: Pipeline, compute: torch.device) -> Reload:
    """Loads the new model and builds its pipeline, leaving the running ones untouched: a
    model or setting that is wrong raises here, and the daemon keeps what runs."""
    config, waiting = plan_reload(running, new)
    model = load_model(config.model.path, compute)
    # Building the pipeline self-tests the model (silence, a loud tone and the last window
    # heard): one that loads but cannot run, or gives NaN, is refused before it is swapped in.
    return Reload(config, waiting, model, Pipeline(model, config.pipeline, compute, heard=pipeline.recent_audio()))


def swap(reload: Reload, running: Pipeline, processor: Processor | None) -> tuple[Pipeline, str]:
    """Puts the new model to work; returns the pipeline now running and when its first message
    comes. With the same rate, window, hop and settings the new model takes over the running
    pipeline's audio history, so it scores the very next hop; otherwise the processor moves
    to the new pipeline and the windowing restarts: the first message comes one window later."""
    new = reload.pipeline
    if (new.rate, new.window, new.hop, new.config) == (running.rate, running.window, running.hop, running.config):
        running.swap_model(reload.model, new.scorer)
        return running, "the next hop"
    if processor is not None:
        processor.reset(processor.source_rate, new)
    return new, "the next full window"


def release_freed_memory() -> None:
    """After a reload the old model is garbage. glibc keeps freed heap for reuse, so without
    this, resident memory creeps up a few MB over many reloads without any leak, which is
    what an operator watching for leaks would see. Not glibc: nothing to do."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
