"""Seconds to score one window on one CPU core: the frontend + network the daemon runs per
hop (`stream.pipeline.Scorer`), the network alone, and a whole hop of the pipeline (voice
gate, frontend, speaker adaptation, network, smoother) on voiced audio. Acceptance: <= 5 ms
for 2 s.

    .venv/bin/python benchmarks/model_latency.py [models/default] [--repeats 200]

Reports the median and the best of several timing rounds: the machine is shared, so the
best round is the closest to the model's own cost, and the median shows what contention does.
The last two lines time what the scorer replaces, interleaved round by round with it so both
see the same contention: nnAudio's own forward (its STFT as strided convolutions) against
our frontend, and the network as trained against its inference copy (`inference_network`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from streamemo.model import load_model
from streamemo.config import PipelineConfig
from streamemo.stream.pipeline import Pipeline, Scorer


def rounds(fn, repeats: int, n_rounds: int = 7) -> list[float]:
    return interleaved({"": fn}, repeats, n_rounds)[""]


def interleaved(fns: dict, repeats: int, n_rounds: int = 7) -> dict[str, list[float]]:
    """Milliseconds per call of each function, one round of each in turn."""
    for fn in fns.values():
        for _ in range(10):
            fn()
    out = {name: [] for name in fns}
    for _ in range(n_rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(repeats):
                fn()
            out[name].append((time.perf_counter() - t) / repeats * 1000)
    return out


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} ms, best {min(times):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="models/default")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--window", type=float, default=2.0, help="seconds of audio per window")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    scorer = Scorer(model, "cpu")
    window = (0.1 * np.random.default_rng(0).standard_normal(round(args.window * model.frontend.sample_rate))
              ).astype(np.float32)[None]
    features = scorer.frontend(torch.from_numpy(window))

    network = scorer.network  # as the daemon runs it (BatchNorm folded into the convolutions)

    def network_only():
        with torch.inference_mode():
            network(features)

    full = rounds(lambda: scorer(window), args.repeats)
    net = rounds(network_only, args.repeats)
    # Noise bursts (on 60 ms, off 40 ms): every window passes the voice gate and is scored.
    pipeline = Pipeline(model, PipelineConfig())
    rate = model.frontend.sample_rate
    hop = np.random.default_rng(1).standard_normal(pipeline.hop).astype(np.float32) * 0.1
    hop *= np.where((np.arange(pipeline.hop) / rate) % 0.1 < 0.06, 1.0, 0.01).astype(np.float32)
    pipeline.feed(np.tile(hop, pipeline.window // pipeline.hop))

    def one_hop():
        assert pipeline.feed(hop)[0].voiced

    whole = rounds(one_hop, args.repeats)

    wave = torch.from_numpy(window)
    trained = model.network.eval()

    def nnaudio_frontend():
        with torch.inference_mode():
            scorer.frontend.layer(wave)

    def trained_network():
        with torch.inference_mode():
            trained(features)

    replaced = interleaved({"ours": lambda: scorer.features(window), "nnAudio": nnaudio_frontend,
                            "copy": network_only, "trained": trained_network}, args.repeats)
    print(f"model {model.id}: {model.arch} {model.arch_params}, {model.n_parameters():,} parameters, "
          f"{args.window:g} s window, torch {torch.__version__}, 1 thread")
    print(f"frontend + network: {summary(full)} per window")
    print(f"network alone:      {summary(net)} per window")
    adapting = "with" if pipeline.adapter is not None else "without"
    print(f"pipeline, one hop:  {summary(whole)} (voice gate, frontend, {adapting} speaker adaptation, "
          "network, smoother)")
    print(f"frontend, interleaved: ours {summary(replaced['ours'])}; nnAudio's own forward "
          f"{summary(replaced['nnAudio'])}")
    print(f"network, interleaved:  inference copy {summary(replaced['copy'])}; as trained "
          f"{summary(replaced['trained'])}")


if __name__ == "__main__":
    main()
