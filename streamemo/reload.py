"""What a reload (SIGHUP) may change in a running daemon, and what needs a restart.

A reload swaps the model, the pipeline settings, the log level, the status interval and
re-reads the allowed-clients folder. Settings bound to resources opened at start (the audio
source, the publisher's socket and keys, the torch device and thread count) keep their
running values: the daemon says which changed settings wait for a restart.
"""

from __future__ import annotations

from dataclasses import fields, replace

from streamemo.config import Config

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
