"""Speech cut into utterances, and each written as a clip: what `streamemo record` does with
what it hears.

The voice gate's network (Silero VAD, `stream/speech.py`) gives each 32 ms chunk a speech
probability; a chunk at the daemon's threshold (`pipeline.speech_threshold`) is speech. An
utterance starts at a chunk of speech and ends once PAUSE_S has passed without one; it is
kept from PAD_S before its first chunk of speech to PAD_S after its last. The chunk, not the
daemon's window decision (a share of speech over the last 0.75 s), because that says whether
to classify a window, not where words begin and end.
"""

from __future__ import annotations

import collections
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamemo import StreamemoError
from streamemo.stream.speech import CHUNK, CONTEXT, RATE, SileroVAD, chunks

# Pauses inside a sentence are mostly shorter (0.2 to 0.5 s); between takes people wait longer.
PAUSE_S = 0.6
# Kept either side of the speech: the network is sure of a word a chunk or two after it begins,
# and a trailing consonant or breath fades below the threshold before it ends.
PAD_S = 0.2


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # 16 kHz mono float32, padded speech
    speech_s: float  # from the start of its first chunk of speech to the end of its last
    long_enough: bool  # at least the cutter's min_s of speech: a clip to keep
    cut: bool  # it reached max_s and was cut there, mid-speech


class UtteranceCutter:
    """16 kHz audio in (`feed`, any lengths), finished utterances out."""

    def __init__(self, threshold: float, min_s: float, max_s: float):
        # The LSTM in numpy even for long reads: importing torch would cost this command seconds
        # and a hundred MB for nothing else (a file is read 8 s at a time), and its threads
        # crawled on a busy two-core box (1.3 s for 300 steps).
        self.vad = SileroVAD(torch_steps=False)
        self.threshold = threshold
        self.min_s = min_s
        self.max_chunks = max(1, round(max_s * RATE / CHUNK))
        self.pause = round(PAUSE_S * RATE / CHUNK)
        self.pad = round(PAD_S * RATE / CHUNK)
        self.restart()

    def restart(self) -> None:
        """A new stream (after a gap in the input): what follows is neither the utterance in
        progress nor what the voice detector heard before."""
        self.vad.reset()
        self._pending = np.zeros(0, np.float32)  # samples short of a whole chunk
        self._context = np.zeros(CONTEXT, np.float32)  # the samples before the next chunk, as the network takes them
        self.reset()

    def reset(self) -> None:
        """Drops the utterance in progress."""
        self._lead_in = collections.deque(maxlen=self.pad)  # chunks before any speech
        self._chunks: list[np.ndarray] = []  # the utterance so far, lead-in included
        self._first = self._last = 0  # indices in _chunks of its first and newest chunk of speech

    @property
    def recording(self) -> bool:
        return bool(self._chunks)

    @property
    def speaking(self) -> bool:
        """Speech within the last PAD_S: an utterance ended now would lose its end."""
        return self.recording and len(self._chunks) - 1 - self._last < self.pad

    @property
    def seconds(self) -> float:
        """Length of the utterance in progress so far (0 while listening)."""
        return len(self._chunks) * CHUNK / RATE

    def feed(self, audio: np.ndarray) -> list[Utterance]:
        audio = np.concatenate([self._pending, np.asarray(audio, np.float32)])
        n = len(audio) // CHUNK
        self._pending = audio[n * CHUNK :]
        if n == 0:
            return []
        probs = self.vad(chunks(audio, self._context))  # the whole read as one batch
        self._context = audio[n * CHUNK - CONTEXT : n * CHUNK]
        out = []
        for k, p in enumerate(probs.tolist()):
            done = self._step(audio[k * CHUNK : (k + 1) * CHUNK], p >= self.threshold)
            if done is not None:
                out.append(done)
        return out

    def finish(self) -> Utterance | None:
        """The utterance in progress, ended here (the input ended), or None while listening."""
        return self._close(cut=False) if self.recording else None

    def _step(self, chunk: np.ndarray, speech: bool) -> Utterance | None:
        if not self._chunks:
            if speech:
                self._chunks = [*self._lead_in, chunk]
                self._first = self._last = len(self._chunks) - 1
            else:
                self._lead_in.append(chunk)
            return None
        self._chunks.append(chunk)
        if speech:
            self._last = len(self._chunks) - 1
        if len(self._chunks) - 1 - self._last >= self.pause:
            return self._close(cut=False)
        if len(self._chunks) >= self.max_chunks:  # cut mid-speech, unless only its pause is left to hear
            return self._close(cut=self.speaking)
        return None

    def _close(self, cut: bool) -> Utterance:
        end = min(len(self._chunks), self._last + 1 + self.pad)
        speech_s = (self._last - self._first + 1) * CHUNK / RATE
        after = self._chunks[end:]
        utterance = Utterance(np.concatenate(self._chunks[:end]), speech_s, speech_s >= self.min_s, cut)
        self.reset()
        if not cut:  # what followed the speech leads into the next one (a cut one goes on at once)
            self._lead_in.extend(after)
        return utterance


# --- clips on disk ----------------------------------------------------------------------


class ClipFolder:
    """DIR/LABEL/SPEAKER/LABEL-NNNN.flac, 16 kHz mono FLAC: the trainer's folder layout
    (`train/readers.read_folders`: the class folder, then the speaker's)."""

    def __init__(self, root: Path, label: str, speaker: str):
        self.folder = Path(root) / label / speaker
        self.label = label
        self._pattern = re.compile(rf"{re.escape(label)}-(\d+)\.flac")
        check_writable_folder(self.folder)

    def count(self) -> int:
        """The clips there now (earlier sessions' too)."""
        return len(self._numbers())

    def _numbers(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return [int(m[1]) for name in os.listdir(self.folder) if (m := self._pattern.fullmatch(name))]

    def write(self, audio: np.ndarray) -> Path:
        """Writes the next clip under a temporary name and renames it into place: a clip is
        there whole or not at all (Ctrl-C, a full disk)."""
        import soundfile as sf

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.label}-{max(self._numbers(), default=0) + 1:04d}.flac"
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=f".{path.name}.", suffix=".tmp",
                                             delete=False) as tmp:
                try:
                    sf.write(tmp, np.clip(audio, -1.0, 1.0), RATE, format="FLAC", subtype="PCM_16")
                    tmp.flush()
                    os.fsync(tmp.fileno())
                    os.replace(tmp.name, path)
                except BaseException:
                    os.unlink(tmp.name)
                    raise
        except OSError as e:
            raise StreamemoError(f"cannot write a clip in {self.folder}: {e.strerror or e}") from None
        return path


def check_writable_folder(folder: Path) -> None:
    """One line unless clips can be written in `folder`; creates nothing (the folders come
    with the first clip, so a session that records none leaves none behind)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StreamemoError(f"cannot write clips in {folder}: {existing} is a file, not a folder; "
                             "choose another DIR", 2)
    try:
        tempfile.TemporaryFile(dir=existing).close()  # the real test: modes, read-only mounts, quotas
    except OSError as e:
        raise StreamemoError(f"cannot write clips in {folder}: {existing}: {e.strerror}; "
                             "choose a folder you can write to", 2) from None
