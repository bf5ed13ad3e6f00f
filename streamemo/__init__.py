"""streamemo: real-time speech-emotion classification, published over ZeroMQ."""

import os
import signal
import sys

__version__ = "0.1.0"

# SIGHUP asks the daemon to reload, and its default action ends a process (exit 129). So a
# process started as the daemon (`streamemo run`, `python -m streamemo run`) ignores it
# from the first instruction of the package until `streamemo run` installs its handlers,
# some 50 to 200 ms of imports later: a reload asked for before the configuration has even
# been read has nothing to reload. Only the interpreter's own start-up comes before this.
if os.path.basename(sys.argv[0] if sys.argv else "") in ("streamemo", "-m") and \
        next((a for a in sys.argv[1:] if not a.startswith("-")), None) == "run":
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

# numpy's OpenBLAS splits even small matrix products over every core, and its threads spin
# while they wait: the voice gate's per-hop products (32 x 256 x 258) cost twice the CPU on
# two threads as on one (benchmarks/RESULTS-gates.md), and on a busy machine forty times.
# Set before anything here imports numpy; an explicit OPENBLAS_NUM_THREADS wins. A program
# that imported numpy first has its BLAS threads started already: they are limited to one.
if "OPENBLAS_NUM_THREADS" not in os.environ:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")

# MKL, inside torch's CPU build, keeps the buffers its matrix products free in a pool of its
# own that no malloc_trim returns: 16 MB of the encoder model's daemon, for no speed measured
# (benchmarks/RESULTS-daemon-cost.md, session 17). Read when torch loads MKL, so set before
# anything here imports torch; an explicit MKL_DISABLE_FAST_MM wins.
os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")

# The canonical label set every corpus reader maps onto, in the order models use.
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


class StreamemoError(Exception):
    """A user-facing problem: the CLI prints its message on one line and exits non-zero.

    `exit_code` is 2 for a usage mistake (bad flag, bad config, unknown device) and 1 for
    everything else (unreadable file, no audio system, address in use).
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ModelError(StreamemoError):
    """A model file (weights or card) that cannot be used."""


def __getattr__(name: str):
    # `from streamemo import Client` without importing pyzmq for everyone who imports the package.
    if name == "Client":
        from streamemo.client import Client

        return Client
    raise AttributeError(f"module 'streamemo' has no attribute {name!r}")
