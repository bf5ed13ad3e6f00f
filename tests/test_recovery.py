"""Acceptance 2: the microphone goes away and comes back; the daemon rides it out.

The virtual microphone is the PulseAudio null sink's monitor (tests/pulse.py). Unloading the
sink removes the source the daemon records from, as unplugging a USB microphone does.
"""


import pytest

from conftest import _collect, _daemon, _stop, _subscriber


def _emotions(messages):
    return [b for t, b in messages if t == "emotion"]


def _statuses(messages):
    return [b for t, b in messages if t == "status"]


@pytest.mark.pulse
def test_lost_microphone_is_reported_and_recovered_without_restart(pulse, random_model, free_endpoint):
    proc = _daemon("--model", str(random_model), "--bind", free_endpoint, "--log-level", "info", env=pulse.env)
    sub = _subscriber(free_endpoint)
    try:
        before = _collect(sub, lambda m: len(_emotions(m)) >= 4, 60, proc)
        assert len(_emotions(before)) >= 4 and proc.poll() is None
        assert _statuses(before)[-1]["input_state"] == "running"

        pulse.unload_sink()
        lost = _collect(sub, lambda m: any(b["input_state"] == "lost" for b in _statuses(m)), 20, proc)
        # While lost: heartbeats go on saying so, no emotion message comes, the process stays up.
        during = _collect(sub, lambda m: False, 3.0, proc)
        assert proc.poll() is None, "the daemon must survive the loss"
        statuses = _statuses(during)
        assert len(statuses) >= 2 and all(b["input_state"] == "lost" for b in statuses), statuses
        assert "input lost" in statuses[-1]["message"]
        assert _emotions(during) == [], "no emotion messages without audio"
    finally:
        pulse.load_sink()  # the session's virtual microphone is shared: always put it back
    try:
        after = _collect(sub, lambda m: len(_emotions(m)) >= 4, 40, proc)
        assert proc.poll() is None
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    resumed = _emotions(after)
    assert len(resumed) >= 4, f"messages did not resume: {[b['message'] for b in _statuses(after)][-3:]}"
    assert any(b["input_state"] == "running" for b in _statuses(after))
    # Sequence numbers go on from where they stopped: one daemon, no restart, nothing dropped.
    last_before = _emotions(before + lost)[-1]["seq"]
    assert resumed[0]["seq"] == last_before + 1
    assert [b["seq"] for b in resumed] == list(range(last_before + 1, last_before + 1 + len(resumed)))
    assert _statuses(after)[-1]["uptime_s"] > _statuses(before)[-1]["uptime_s"]
    assert "is back" in err
