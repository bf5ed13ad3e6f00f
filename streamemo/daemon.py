"""The daemon: source -> processor -> publisher, with a status heartbeat and clean shutdown.

One processing loop on the main thread. The only other thread is PortAudio's callback,
which just fills the ring buffer. The loop wakes when audio arrives (or every 100 ms),
so stop requests and heartbeats are never late by more than that.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time

import numpy as np
import torch

from streamemo.audio.sources import DeviceLost, EndOfStream, open_source
from streamemo.config import Config
from streamemo.features import pick_device
from streamemo.model import load_model
from streamemo.publish import Publisher
from streamemo.stream.pipeline import Pipeline
from streamemo.stream.processor import Processor

log = logging.getLogger("streamemo.daemon")

POLL_S = 0.1  # longest the loop sleeps waiting for audio


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.stop_requested = threading.Event()
        self.started = time.monotonic()
        self.proc_ms = collections.deque(maxlen=120)  # ~30 s of hops at 0.25 s
        self.status_seq = 0
        self.message = "starting"
        torch.set_num_threads(config.pipeline.threads)
        self.compute = pick_device(config.pipeline.device)
        self.model = load_model(config.model.path, self.compute)
        self.pipeline = Pipeline(self.model, config.pipeline, self.compute)
        self.source = None
        self.publisher = Publisher(config.publish.bind, config.publish.hwm)

    def request_stop(self, *_) -> None:
        self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        """Runs until stopped or the source ends; returns the exit code."""
        try:
            self.source = open_source(self.config.audio)
            processor = Processor(self.pipeline, self.source.rate, self.config.audio.source)
            log.info("listening to %s at %d Hz; model %s on %s; publishing on %s", self.source.device,
                     self.source.rate, self.model.id, self.compute, self.publisher.endpoint)
            self.message = f"listening to {self.source.device}"
            next_status = time.monotonic()
            while not self.stop_requested.is_set():
                try:
                    chunk = self.source.read(POLL_S)
                except EndOfStream:
                    self._publish(processor.finish(), processor)
                    self.message = "source ended"
                    break
                if chunk is not None:
                    self._publish(processor.process(chunk), processor)
                if time.monotonic() >= next_status:
                    self._send_status()
                    next_status += self.config.publish.status_interval_s
            self._send_status()
            return 0
        except DeviceLost as e:
            log.error("%s", e)
            return 1
        finally:
            self.close()

    def _publish(self, results, processor: Processor) -> None:
        for _, body in results:
            body["t_publish"] = time.time()
            self.publisher.send("emotion", body)
        self.proc_ms.extend(processor.proc_ms)
        processor.proc_ms.clear()

    def _send_status(self) -> None:
        source = self.source
        times = np.asarray(self.proc_ms) if self.proc_ms else None
        self.publisher.send("status", {
            "seq": self.status_seq,
            "t_publish": time.time(),
            "source": self.config.audio.source,
            "device": source.device if source else "",
            "input_state": source.state if source else "starting",
            "sample_rate": source.rate if source else 0,
            "model_rate": self.pipeline.rate,
            "model": self.model.id,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "overflows": source.overflows if source else 0,
            "dropped_samples": source.dropped if source else 0,
            "messages_sent": self.publisher.sent["emotion"],
            "hop_s": self.config.pipeline.hop_s,
            "proc_ms_p50": None if times is None else round(float(np.percentile(times, 50)), 3),
            "proc_ms_p99": None if times is None else round(float(np.percentile(times, 99)), 3),
            "compute": str(self.compute),
            "message": self.message,
        })
        self.status_seq += 1

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        self.publisher.close()
