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
import ctypes
import gc
import logging
import time

import numpy as np
import torch

from streamemo import StreamemoError
from streamemo.audio.sources import DeviceLost, EndOfStream, open_source, rescan_devices
from streamemo.config import Config
from streamemo.features import pick_device
from streamemo.model import load_model
from streamemo.publish import Publisher
from streamemo.reload import plan_reload
from streamemo.security import CurveServer, curve_server
from streamemo.service import Notifier, Signals
from streamemo.stream.pipeline import Pipeline, Scorer
from streamemo.stream.processor import Processor

log = logging.getLogger("streamemo.daemon")

POLL_S = 0.1  # longest the loop sleeps waiting for audio
RETRY_FIRST_S = 0.5  # first wait before reopening a lost input device
RETRY_MAX_S = 5.0  # the wait doubles per failed attempt up to this


class Daemon:
    def __init__(self, config: Config, reload_config=None, notifier: Notifier | None = None,
                 signals: Signals | None = None, stall_after_s: float | None = None, curve: CurveServer | None = None):
        """`reload_config()` returns the config to use on SIGHUP (the file re-read, flags
        re-applied); without it a reload re-reads the model only. `signals`: the stop and
        reload flags, set by signal handlers installed before the daemon was built
        (`Signals.install`); without them only `stop_requested.set()` stops it. `stall_after_s`
        is a test hook: the loop hangs that long after it starts, as a stuck pipeline would, so
        a test can see the watchdog pings stop (`streamemo run --debug-stall-after S`). `curve`:
        the publisher's CURVE settings when already loaded; else they come from the config."""
        self.config = config
        self.reload_config = reload_config
        self.notifier = notifier or Notifier()
        signals = signals or Signals()
        self.stop_requested, self.reload_requested = signals.stop, signals.reload
        self.started = time.monotonic()
        self.stall_after_s = stall_after_s
        self.stall_at = None
        self.proc_ms = collections.deque(maxlen=120)  # ~30 s of hops at 0.25 s
        self.status_seq = 0
        self.message = "starting"
        self.source = None
        self.processor: Processor | None = None
        self.device_name = ""  # the last input device opened, still named while it is lost
        self.lost = False  # the input was lost and no audio has arrived since
        self.ready = False
        self.retry_s = RETRY_FIRST_S
        self.next_retry = 0.0
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
        except BaseException:
            self.publisher.close(drain_s=0)
            raise

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        """Runs until stopped or the source ends; returns the exit code."""
        try:
            if self.stop_requested.is_set():
                return 0
            self._open(open_source(self.config.audio))
            self.message = f"waiting for audio from {self.device_name}"
            self.notifier.status(self.message)
            now = time.monotonic()
            self.next_status, self.next_watchdog = now, now
            if self.stall_after_s is not None:
                self.stall_at = now + self.stall_after_s
            while not self.stop_requested.is_set():
                self._housekeeping()
                if self.source is None:
                    self._retry_source()
                    continue
                try:
                    chunk = self.source.read(POLL_S, want=self.processor.source_samples_wanted())
                except EndOfStream:
                    self._publish(self.processor.finish())
                    self.message = "source ended"
                    break
                except DeviceLost as e:
                    self._lose_source(e)
                    continue
                if chunk is not None:
                    if self.lost or not self.ready:
                        self._audio_flowing()
                    self._publish(self.processor.process(chunk))
            self._send_status()
            return 0
        finally:
            self.notifier.stopping(f"stopping: {self.message}")
            self.close()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.stall_at is not None and now >= self.stall_at:
            self._stall()
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

    def _stall(self) -> None:
        log.warning("debug: stalling the processing loop on purpose (--debug-stall-after)")
        self.stall_at = None
        while True:  # hung for good, like a deadlocked pipeline: only SIGKILL ends this
            time.sleep(3600)

    def _publish(self, results) -> None:
        for _, body in results:
            body["t_publish"] = time.time()
            self.publisher.send("emotion", body)
        self.proc_ms.extend(self.processor.proc_ms)
        self.processor.proc_ms.clear()

    # --- input device: open, lose, retry ---------------------------------------------------

    def _open(self, source) -> None:
        """Starts a stream from a freshly opened source. After a loss the audio has a gap, so
        the pipeline starts afresh, but sequence numbers go on from where they were."""
        if self.processor is not None:
            self.pipeline.reset()
        self.source = source
        self.device_name = source.device
        self._new_processor(self.pipeline)
        log.info("listening to %s at %d Hz; model %s on %s; publishing on %s", source.device,
                 source.rate, self.model.id, self.compute, self.publisher.endpoint)

    def _audio_flowing(self) -> None:
        if self.lost:
            log.info("input %s is back", self.device_name)
            self.lost = False
            self.retry_s = RETRY_FIRST_S
        self.message = f"listening to {self.device_name}"
        self._send_status()
        if not self.ready:
            self.ready = True  # the model is loaded and audio arrives: we do what we are for
            self.notifier.ready(self._summary())
        else:
            self.notifier.status(self._summary())

    def _lose_source(self, problem: Exception) -> None:
        log.warning("%s; retrying in %.1f s", problem, self.retry_s)
        self.source.close()
        self.source = None
        self.lost = True
        self.message = f"input lost: {problem}; retrying"
        self.next_retry = time.monotonic() + self.retry_s
        self._send_status()  # say so now, not at the next heartbeat
        self.notifier.status(self.message)

    def _retry_source(self) -> None:
        wait = self.next_retry - time.monotonic()
        if wait > 0:
            self.stop_requested.wait(min(wait, POLL_S))
            return
        try:
            rescan_devices()  # only a microphone gets lost; PortAudio lists devices at init only
            source = open_source(self.config.audio)
        except (StreamemoError, DeviceLost) as e:
            self.retry_s = min(self.retry_s * 2, RETRY_MAX_S)
            self.next_retry = time.monotonic() + self.retry_s
            self.message = f"input lost: {e}; retrying in {self.retry_s:.0f} s"
            log.info("%s", self.message)
            return
        self._open(source)
        # Not "back" until audio arrives: a reopened stream may still deliver nothing, and
        # then it is lost again after the source's silence limit, with a longer wait.
        self.retry_s = min(self.retry_s * 2, RETRY_MAX_S)

    # --- reload ----------------------------------------------------------------------------

    def _reload(self) -> None:
        """SIGHUP: the config file and the model again. Anything invalid keeps what runs."""
        log.info("reloading configuration and model")
        self.notifier.reloading()
        try:
            new = self.reload_config() if self.reload_config else self.config
            config, waiting = plan_reload(self.config, new)
            model = load_model(config.model.path, self.compute)
            scorer = Scorer(model, self.compute)
            # The new pipeline's self-test scores silence, a loud tone and the last window
            # heard: a model that loads but cannot run, or gives NaN, is refused here.
            pipeline = Pipeline(model, config.pipeline, self.compute, scorer=scorer,
                                heard=self.pipeline.recent_audio())
            clients = self.publisher.curve.reload() if self.publisher.curve is not None else None
        except Exception as e:  # whatever is wrong with the new files, the old ones keep running
            why = str(e) or type(e).__name__
            # A mistake in the files is one line; anything else is a bug: its traceback goes to the log.
            log.error("reload failed, still running model %s: %s", self.model.id, why,
                      exc_info=not isinstance(e, StreamemoError))
            self.message = f"reload failed, still running model {self.model.id}: {why}"
            self._send_status()
            self.notifier.ready(self.message)
            return
        when = self._swap(model, pipeline)
        del pipeline, scorer
        _release_freed_memory()
        self.config = config
        logging.getLogger().setLevel(config.log.level.upper())
        for key in waiting:
            log.warning("%s changed in the config: it takes effect after a restart", key)
        note = f"; {', '.join(waiting)} need a restart" if waiting else ""
        allowed = "" if clients is None else f"; {clients} client key(s) allowed"
        self.message = f"reloaded: model {model.id} from {when}{allowed}{note}"
        log.info("%s", self.message)
        self._send_status()
        self.notifier.ready(self._summary())

    def _swap(self, model, pipeline: Pipeline) -> str:
        """Puts the new model to work. With the same rate, window and settings it takes over
        the running pipeline's audio history, so it scores the very next hop; otherwise the
        windowing restarts and the first message comes one window later."""
        old = self.pipeline
        self.model = model
        if (pipeline.rate, pipeline.window, pipeline.hop, pipeline.config) == (old.rate, old.window, old.hop, old.config):
            old.swap_model(model, pipeline.scorer)
            if self.processor is not None:
                self.processor.labels, self.processor.model_id = list(model.labels), model.id
            return "the next hop"
        self.pipeline = pipeline
        if self.source is not None:
            self._new_processor(pipeline)
        return "the next full window"

    def _new_processor(self, pipeline: Pipeline) -> None:
        """A processor for the current source; sequence numbers and counts go on."""
        old = self.processor
        self.processor = Processor(pipeline, self.source.rate, self.config.audio.source)
        if old is not None:
            self.processor.seq, self.processor.repaired = old.seq, old.repaired

    # --- reporting -------------------------------------------------------------------------

    def _input_state(self) -> str:
        if self.lost:
            return "lost"
        return self.source.state if self.source is not None else "starting"

    def _summary(self) -> str:
        """The line `systemctl status` shows."""
        if self.lost or not self.ready:
            return self.message
        line = (f"listening to {self.device_name}; model {self.model.id}; "
                f"{self.publisher.sent['emotion']} messages on {self.publisher.endpoint}")
        return line if self.message.startswith("listening") else f"{line}; {self.message}"

    def _send_status(self) -> None:
        source = self.source
        times = np.asarray(self.proc_ms) if self.proc_ms else None
        self.publisher.send("status", {
            "seq": self.status_seq,
            "t_publish": time.time(),
            "source": self.config.audio.source,
            "device": self.device_name,
            "input_state": self._input_state(),
            "sample_rate": source.rate if source else 0,
            "model_rate": self.pipeline.rate,
            "model": self.model.id,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "overflows": source.overflows if source else 0,
            "dropped_samples": source.dropped if source else 0,
            "repaired_samples": self.processor.repaired if self.processor else 0,
            "messages_sent": self.publisher.sent["emotion"],
            "hop_s": self.pipeline.config.hop_s,
            "proc_ms_p50": None if times is None else round(float(np.percentile(times, 50)), 3),
            "proc_ms_p99": None if times is None else round(float(np.percentile(times, 99)), 3),
            "compute": str(self.compute),
            "adapted_s": self.pipeline.adapted_s,
            "message": self.message,
        })
        self.status_seq += 1

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        self.publisher.close()
        self.notifier.close()


def _release_freed_memory() -> None:
    """After a reload the old model is garbage. glibc keeps freed heap for reuse, so without
    this, resident memory creeps up a few MB over many reloads without any leak, which is
    what an operator watching for leaks would see. Not glibc: nothing to do."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
