"""The daemon: source -> processor -> publisher, with a status heartbeat and clean shutdown,
the systemd service protocol, reload on SIGHUP and recovery from a lost input device.

One processing loop on the main thread. The only other threads are PortAudio's callback,
which just fills the ring buffer, and (with CURVE) the ZAP authenticator. The loop wakes
when the audio completing the next window has arrived (or every 100 ms), so stop requests,
reloads, heartbeats and watchdog pings are never late by more than that. Signal handlers
only set flags; the loop acts on them between hops, so a reload never lands in the middle
of one.

The watchdog ping is sent by this loop and nowhere else: if processing hangs, the pings
stop and systemd restarts the service, which a ping from a separate thread would hide.
"""

from __future__ import annotations

import collections
import logging
import time

import numpy as np
import torch

from streamemo import StreamemoError
from streamemo.audio.input import POLL_S, Input, InputState
from streamemo.audio.sources import DeviceLost, EndOfStream, open_source
from streamemo.config import Config
from streamemo.features import pick_device
from streamemo.model import load_model
from streamemo.protocol import StatusMessage
from streamemo.publish import Publisher
from streamemo.reload import prepare, release_freed_memory, swap
from streamemo.security import CurveServer, curve_server
from streamemo.service import Notifier, Signals
from streamemo.stream.pipeline import Pipeline
from streamemo.stream.processor import Processor

log = logging.getLogger("streamemo.daemon")


class Daemon:
    def __init__(self, config: Config, reload_config=None, notifier: Notifier | None = None,
                 signals: Signals | None = None, curve: CurveServer | None = None, open_input=open_source):
        """`reload_config()` returns the config to use on SIGHUP (the file re-read, flags
        re-applied); without it a reload re-reads the model only. `signals`: the stop and
        reload flags, set by signal handlers installed before the daemon was built
        (`Signals.install`); without them only `stop_requested.set()` stops it. `curve`: the
        publisher's CURVE settings when already loaded; else they come from the config.
        `open_input(config.audio)` opens the audio source (`audio.sources.open_source`)."""
        self.config = config
        self.reload_config = reload_config
        self.notifier = notifier or Notifier()
        signals = signals or Signals()
        self.stop_requested, self.reload_requested = signals.stop, signals.reload
        self.started = time.monotonic()
        self.proc_ms = collections.deque(maxlen=120)  # ~30 s of hops at 0.24 s
        self.status_seq = 0
        self.input = Input(config.audio, open_input)
        self.processor: Processor | None = None  # made when the input first opens: it needs its rate
        self.ready = False  # READY=1 sent: the model is loaded and audio has arrived
        # The latest reload's outcome, shown until the input has news (lost, back, ended).
        self.note: str | None = None
        if curve is None:
            curve = curve_server(config.security.curve_secret, config.security.curve_clients)
        self.publisher = Publisher(config.publish.bind, config.publish.hwm, curve=curve,
                                   insecure=config.security.insecure)
        try:
            torch.set_num_threads(config.pipeline.threads)
            self.compute = pick_device(config.pipeline.device)
            self.notifier.status(f"loading model {config.model.path}")
            self.model = load_model(config.model.path, self.compute)
            self.pipeline = Pipeline(self.model, config.pipeline, self.compute)
            release_freed_memory()  # loading an encoder frees tens of MB of temporaries glibc would keep
        except BaseException:
            self.publisher.close(drain_s=0)
            raise

    @property
    def message(self) -> str:
        """A line a person can read: what the daemon is doing or what went wrong."""
        return self.note or self.input.message

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        """Runs until stopped or the source ends; returns the exit code."""
        try:
            if self.stop_requested.is_set():
                return 0
            self.input.open()
            self._opened()
            self.notifier.status(self.message)
            now = time.monotonic()
            self.next_status, self.next_watchdog = now, now
            while not self.stop_requested.is_set():
                self._housekeeping()
                if self.input.source is None:
                    self._retry()
                    continue
                try:
                    chunk = self.input.read(POLL_S, want=self.processor.source_samples_wanted())
                except EndOfStream:
                    self._publish(self.processor.finish())
                    self.note = None
                    break
                except DeviceLost:
                    self.note = None
                    self._send_status()  # say so now, not at the next heartbeat
                    self.notifier.status(self.message)
                    continue
                if chunk is not None:
                    if self.input.state is not InputState.LISTENING:
                        self._audio_flowing()
                    self._publish(self.processor.process(chunk))
                    self.processor.prepare()  # after publishing: off the path from capture to subscriber
            self._send_status()
            return 0
        finally:
            self.notifier.stopping(f"stopping: {self.message}")
            self.close()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self._reload()
        if self.notifier.watchdog_s and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + self.notifier.watchdog_s / 2  # systemd's advice: half the timeout
        if now >= self.next_status:
            self._send_status()
            self.notifier.status(self._summary())
            # On schedule, but never a burst of heartbeats to catch up after a slow hop.
            self.next_status = max(self.next_status + self.config.publish.status_interval_s, now)

    def _publish(self, results) -> None:
        for _, message in results:
            self.publisher.send(message)
        self.proc_ms.extend(self.processor.proc_ms)
        self.processor.proc_ms.clear()

    # --- the input: opened, flowing, lost and reopened ---------------------------------------

    def _opened(self) -> None:
        """Starts a stream from a freshly opened source. After a loss the audio has a gap, so
        the pipeline starts afresh, but sequence numbers go on from where they were."""
        source = self.input.source
        if self.processor is None:
            self.processor = Processor(self.pipeline, source.rate, self.config.audio.source)
        else:
            self.processor.reset(source.rate, self.pipeline)
        chosen = "" if self.pipeline.keep is None else f", deciding among {', '.join(self.pipeline.labels)} only"
        log.info("listening to %s at %d Hz; model %s on %s%s; publishing on %s", source.device,
                 source.rate, self.model.id, self.compute, chosen, self.publisher.endpoint)

    def _audio_flowing(self) -> None:
        self.input.arrived()
        self.note = None
        self._send_status()
        if not self.ready:
            self.ready = True  # the model is loaded and audio arrives: we do what we are for
            self.notifier.ready(self._summary())
        else:
            self.notifier.status(self._summary())

    def _retry(self) -> None:
        reopened = self.input.retry(self.stop_requested.wait)
        if reopened:
            self._opened()
        elif reopened is False:
            self.note = None  # the failed attempt is the news now

    # --- reload ----------------------------------------------------------------------------

    def _reload(self) -> None:
        """SIGHUP: the config file and the model again. Anything invalid keeps what runs."""
        log.info("reloading configuration and model")
        self.notifier.reloading()
        try:
            new = self.reload_config() if self.reload_config else self.config
            reload = prepare(self.config, new, self.pipeline, self.compute)
            clients = self.publisher.curve.reload() if self.publisher.curve is not None else None
        except Exception as e:  # whatever is wrong with the new files, the old ones keep running
            why = str(e) or type(e).__name__
            # A mistake in the files is one line; anything else is a bug: its traceback goes to the log.
            log.error("reload failed, still running model %s: %s", self.model.id, why,
                      exc_info=not isinstance(e, StreamemoError))
            self.note = f"reload failed, still running model {self.model.id}: {why}"
            self._send_status()
            self.notifier.ready(self.message)
            return
        self.pipeline, when = swap(reload, self.pipeline, self.processor)
        self.model, self.config, waiting = reload.model, reload.config, reload.waiting
        del reload
        release_freed_memory()
        logging.getLogger().setLevel(self.config.log.level.upper())
        for key in waiting:
            log.warning("%s changed in the config: it takes effect after a restart", key)
        note = f"; {', '.join(waiting)} need a restart" if waiting else ""
        allowed = "" if clients is None else f"; {clients} client key(s) allowed"
        self.note = f"reloaded: model {self.model.id} from {when}{allowed}{note}"
        log.info("%s", self.note)
        self._send_status()
        self.notifier.ready(self._summary())

    # --- reporting -------------------------------------------------------------------------

    def _summary(self) -> str:
        """The line `systemctl status` shows."""
        if self.input.state is not InputState.LISTENING:
            return self.message
        line = (f"listening to {self.input.device}; model {self.model.id}; "
                f"{self.publisher.sent['emotion']} messages on {self.publisher.endpoint}")
        return line if self.note is None else f"{line}; {self.note}"

    def _send_status(self) -> None:
        source = self.input.source
        times = np.asarray(self.proc_ms) if self.proc_ms else None
        self.publisher.send(StatusMessage(
            seq=self.status_seq,
            source=self.config.audio.source,
            device=self.input.device,
            input_state=self.input.state.wire,
            sample_rate=source.rate if source else 0,
            model_rate=self.pipeline.rate,
            model=self.model.id,
            uptime_s=round(time.monotonic() - self.started, 3),
            overflows=source.overflows if source else 0,
            dropped_samples=source.dropped if source else 0,
            repaired_samples=self.processor.repaired if self.processor else 0,
            messages_sent=self.publisher.sent["emotion"],
            hop_s=self.pipeline.config.hop_s,
            proc_ms_p50=None if times is None else round(float(np.percentile(times, 50)), 3),
            proc_ms_p99=None if times is None else round(float(np.percentile(times, 99)), 3),
            compute=str(self.compute),
            adapted_s=self.pipeline.adapted_s,
            speech_share=None if self.pipeline.gate.recent_share is None else round(self.pipeline.gate.recent_share, 4),
            message=self.message,
        ))
        self.status_seq += 1

    def close(self) -> None:
        self.input.close()
        self.publisher.close()
        self.notifier.close()
