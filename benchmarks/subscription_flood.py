"""What subscribers can make a running daemon hold (issue 31, item 8): a real `streamemo run`
(the bundled small model, a file played in real time) and a peer on an XSUB socket, as the
proxy connects, sending 60,000 random subscriptions; the daemon's resident memory before,
at its peak while the peer is connected, and over the 30 s after the peer has gone.

    .venv/bin/python benchmarks/subscription_flood.py [--count 60000] [--sizes 512 50]

Result: benchmarks/results/subscription-flood-<date>.json. Run it with PYTHONPATH set to an
older checkout to measure that one (the issue's figures: 268 -> 753 MiB with 512 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_path import result_path  # noqa: E402

PEER = """
import os, sys, time, zmq
peer = zmq.Context.instance().socket(zmq.XSUB)
peer.setsockopt(zmq.SNDHWM, 0)  # queue them all, however fast the daemon reads
peer.connect(sys.argv[1])
time.sleep(0.5)
for _ in range(int(sys.argv[2])):
    peer.send(b"\\x01" + os.urandom(int(sys.argv[3])))
time.sleep(float(sys.argv[4]))  # connected a while: what the daemon holds for it
"""


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def flood(wav: Path, count: int, size: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    daemon = subprocess.Popen([sys.executable, "-m", "streamemo", "run", "--model", "small", "--source", str(wav),
                               "--bind", endpoint], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(15)  # loaded and publishing
        before = rss_mib(daemon.pid)
        peer = subprocess.Popen([sys.executable, "-c", PEER, endpoint, str(count), str(size), "10"])
        peak = before
        while peer.poll() is None and daemon.poll() is None:
            peak = max(peak, rss_mib(daemon.pid))
            time.sleep(0.1)
        if daemon.poll() is not None:
            peer.kill()
            return {"count": count, "bytes": size, "daemon_exit": daemon.returncode,
                    "stderr_tail": daemon.communicate()[1].strip()[-2000:]}
        gone, after, back_after_s = time.monotonic(), rss_mib(daemon.pid), None
        while time.monotonic() - gone < 30 and daemon.poll() is None:  # it reads the peer's leaving in its own time
            time.sleep(0.5)
            after = rss_mib(daemon.pid)
            if back_after_s is None and after < before + 10:
                back_after_s = round(time.monotonic() - gone, 1)
        alive = daemon.poll() is None
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=30)
    return {"count": count, "bytes": size, "before_mib": round(before, 1), "peak_mib": round(peak, 1),
            "after_30s_mib": round(after, 1), "back_within_10mib_after_s": back_after_s, "daemon_alive": alive, "daemon_exit": daemon.returncode,
            "stderr_tail": err.strip()[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 50])
    args = parser.parse_args()
    import streamemo

    results = {"streamemo": str(Path(streamemo.__file__).parent), "load_average": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tone.wav"
        t = np.arange(16000 * 600) / 16000
        sf.write(wav, (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
        for size in args.sizes:
            results["runs"].append(flood(wav, args.count, size))
            print(json.dumps(results["runs"][-1]), flush=True)
    out = result_path("subscription-flood" + ("-" + os.environ["FLOOD_LABEL"] if "FLOOD_LABEL" in os.environ else ""))
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
