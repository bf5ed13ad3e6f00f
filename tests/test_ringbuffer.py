"""Ring buffer properties: wrap-around, overflow accounting, reads never torn."""

import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamemo.audio.ringbuffer import RingBuffer, RingReader


@given(capacity=st.integers(1, 64), writes=st.lists(st.integers(0, 100), max_size=40),
       read_every=st.integers(1, 5), read_max=st.none() | st.integers(1, 80))
def test_reader_gets_a_suffix_of_the_stream_and_counts_what_it_lost(capacity, writes, read_every, read_max):
    ring = RingBuffer(capacity)
    reader = RingReader(ring)
    counter = 0
    got = []
    for i, n in enumerate(writes):
        ring.write(np.arange(counter, counter + n, dtype=np.float32))
        counter += n
        if i % read_every == 0:
            got.append(reader.read(read_max))
    while reader.available:
        got.append(reader.read(read_max))
    got = np.concatenate(got) if got else np.zeros(0, np.float32)
    # Every sample is either delivered once, in order, or counted as dropped.
    assert len(got) + reader.dropped == counter
    # Values are stream positions: strictly increasing means in order, none twice, and any
    # gap is a loss the reader counted above.
    assert np.all(np.diff(got) >= 1)
    if reader.dropped == 0:
        assert list(got) == list(range(counter))
    assert reader.position == ring.written


@given(capacity=st.integers(4, 32), chunks=st.lists(st.integers(1, 10), min_size=1, max_size=30))
def test_wrap_around_keeps_values_intact(capacity, chunks):
    ring = RingBuffer(capacity)
    reader = RingReader(ring)
    counter = 0
    for n in chunks:
        n = min(n, capacity)
        ring.write(np.arange(counter, counter + n, dtype=np.float32))
        out = reader.read()
        assert list(out) == list(range(counter, counter + n))
        counter += n
    assert reader.dropped == 0 and reader.overruns == 0


def test_falling_behind_counts_one_overrun_and_the_lost_samples():
    ring = RingBuffer(10)
    reader = RingReader(ring)
    ring.write(np.arange(25, dtype=np.float32))
    out = reader.read()
    # max_write (25) exceeds the capacity, so a concurrent write could clobber anything:
    # the reader keeps nothing it cannot prove intact, and counts it all.
    assert len(out) + reader.dropped == 25
    assert reader.overruns >= 1
    ring2 = RingBuffer(10)
    reader2 = RingReader(ring2)
    for start in range(0, 30, 3):
        ring2.write(np.arange(start, start + 3, dtype=np.float32))
    out2 = reader2.read()
    assert list(out2) == list(range(30 - len(out2), 30))
    assert reader2.dropped == 30 - len(out2) and reader2.overruns == 1


@settings(deadline=None, max_examples=10)
@given(block=st.integers(1, 64), capacity=st.integers(128, 512))
def test_concurrent_reads_are_never_torn(block, capacity):
    """A real producer thread writes a counting signal while the reader reads: every read
    must be a run of consecutive values, whatever the interleaving."""
    ring = RingBuffer(capacity)
    reader = RingReader(ring)
    total = 20000
    done = threading.Event()

    def produce():
        for start in range(0, total, block):
            ring.write(np.arange(start, min(start + block, total), dtype=np.float32))
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    last = -1
    delivered = 0
    while not (done.is_set() and reader.available == 0):
        out = reader.read(97)
        if len(out):
            assert np.all(np.diff(out) == 1), "a read mixed samples from different laps of the ring"
            assert out[0] > last
            last = out[-1]
            delivered += len(out)
    thread.join()
    assert delivered + reader.dropped == total


def test_time_of_maps_positions_to_capture_times():
    ring = RingBuffer(100)
    reader = RingReader(ring)
    ring.write(np.zeros(50, np.float32), t_last=1000.0)
    assert reader.time_of(49, 10.0) == 1000.0
    assert abs(reader.time_of(39, 10.0) - 999.0) < 1e-9


def test_a_real_time_file_hands_over_what_has_happened_once_a_window_has(tmp_path):
    """`run --source FILE` paces a file like a microphone: a read asking for `want` samples
    returns them all at once when they are due (the daemon wakes once per hop, not once
    per block), never a sample before its time, and the whole file in order."""
    import time

    import soundfile as sf

    from streamemo.audio.sources import EndOfStream, FileSource

    rate = 16000
    audio = (np.arange(rate, dtype=np.float32) % 100) / 100  # 1 s, every sample distinct enough
    sf.write(tmp_path / "a.wav", audio, rate, subtype="FLOAT")
    source = FileSource(str(tmp_path / "a.wav"), realtime=True, block_s=0.01)
    got, reads = [], 0
    try:
        while True:
            chunk = source.read(timeout=0.1, want=4000)
            if chunk is None:
                continue
            reads += 1
            # Nothing ahead of its time: the last sample handed over has "happened".
            assert source.position / rate <= time.monotonic() - source._mono0 + 1e-3
            got.append(chunk.samples)
    except EndOfStream:
        pass
    finally:
        source.close()
    np.testing.assert_array_equal(np.concatenate(got), audio)
    assert reads <= 20, f"{reads} reads for 4 windows' worth of audio: woken per block, not per window"
