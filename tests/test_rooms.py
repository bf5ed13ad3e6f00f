"""Rooms, microphones and background noise (streamemo/train/rooms.py): as seeded training
augmentation and as the fixed degraded test condition. Real simulation and real DSP on
generated audio; the tests of the shared noise folder skip when it is absent."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))

from conftest import SHARED_DATA  # noqa: E402

from streamemo import StreamemoError  # noqa: E402
from streamemo.train import noise as background  # noqa: E402
from streamemo.train import rooms  # noqa: E402
from streamemo.train.augment import AugmentConfig, WaveAugmenter  # noqa: E402

RATE = 16000
NONSPEECH = SHARED_DATA / "nonspeech"
needs_nonspeech = pytest.mark.skipif(not NONSPEECH.is_dir(), reason=f"no noise folder at {NONSPEECH}")
CATEGORIES = {"household", "speech-commands-noise", "hu100", "gtzan/music", "librosa-music"}
# AugmentConfig().key() before the acoustic-condition fields existed: cached copies depend on it.
LEGACY_KEY = ('{"compress_ratio": [2.0, 6.0], "compress_threshold_db": [-30.0, -15.0], "dynamic_range": false, '
              '"gain": true, "gain_db": [-6.0, 6.0], "noise": true, "noise_snr_db": [15.0, 40.0], "p": 0.5, '
              '"pitch": true, "pitch_semitones": [-2.0, 2.0], "shift": true, "shift_s": 0.3, "speed": false, '
              '"speed_factor": [0.9, 1.1], "stretch": true, "stretch_rate": [0.85, 1.15]}')
OLD_OFF = dict(noise=False, shift=False, stretch=False, pitch=False, gain=False)


def voice(seconds: float, amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    """A steady voiced sound (harmonics of 140 Hz) with a little breath noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    x += 0.05 * np.random.default_rng(seed).standard_normal(len(t))
    return (amplitude * x / np.abs(x).max()).astype(np.float32)


def band_energy(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(spectrum[(f >= low) & (f < high)].sum())


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rir-cache")


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory) -> Path:
    """A small noise folder of our own: categories, numbered takes of one source, a speech folder."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    names = ["hum/a.wav", "hum/b.wav", "hum/c.wav", "hum/d.wav", "hum/e.wav", "street/x.flac", "street/y.flac",
             "kitchen/aircon_0.wav", "kitchen/aircon_1.wav", "kitchen/aircon_2.wav", "kitchen/fridge.wav",
             "radio/speech/talk_0.wav", "radio/speech/talk_1.wav", "radio/music/song.wav"]
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # Brown-ish noise at 22050 Hz: load_audio has to resample it, as with real files.
        sf.write(path, 0.05 * np.cumsum(rng.standard_normal(22050)) / 60, 22050)
    (root / "README.txt").write_text("not audio")
    return root


def test_rir_bank_is_seeded_cached_and_train_and_test_rooms_differ(cache, tmp_path):
    bank = rooms.rir_bank(7, 3, cache_dir=cache)
    assert bank.rirs.shape[0] == 3 and bank.rirs.dtype == np.float32 and bank.params.shape == (3, 6)
    shapes = sorted(np.load(f, allow_pickle=False).shape for f in (cache / "rirs").glob("*.npy"))
    assert shapes == sorted([(3, 6), bank.rirs.shape])  # plain arrays, no pickle
    again = rooms.rir_bank(7, 3, cache_dir=cache)  # read back from disk
    assert np.array_equal(again.rirs, bank.rirs) and np.array_equal(again.params, bank.params)
    fresh = rooms.rir_bank(7, 2, cache_dir=tmp_path)  # simulated anew: same seed, same rooms
    assert np.array_equal(fresh.rirs, bank.rirs[:2, : fresh.rirs.shape[1]])
    assert not np.any(bank.rirs[:2, fresh.rirs.shape[1] :])
    rt60, measured, distance = bank.params[:, 0], bank.params[:, 1], bank.params[:, 2]
    assert np.all((rt60 >= 0.2) & (rt60 <= 1.0)) and np.all((distance >= 0.5) & (distance <= 3.0))
    assert np.all((measured > 0.1) & (measured < 1.5))
    for rir in bank.rirs:  # the direct path sits at RIR_ONSET, with only its sinc's skirt before
        assert np.argmax(np.abs(rir[: rooms.RIR_ONSET + 2])) >= rooms.RIR_ONSET - 1
        assert np.abs(rir[: rooms.RIR_ONSET - 3]).max() < 0.3 * np.abs(rir[rooms.RIR_ONSET - 1 : rooms.RIR_ONSET + 2]).max()
    train = rooms.rir_bank(rooms.TRAIN_RIR_SEED, 2, cache_dir=cache)
    test = rooms.rir_bank(rooms.TEST_RIR_SEED, 2, cache_dir=cache)
    assert not np.any(np.isin(train.params[:, 0], test.params[:, 0]))
    n = min(train.rirs.shape[1], test.rirs.shape[1])
    assert all(not np.allclose(a[:n], b[:n]) for a in train.rirs for b in test.rirs)


def test_reverb_lengthens_the_decay_and_keeps_the_onset(cache):
    bank = rooms.rir_bank(7, 3, cache_dir=cache)
    # A noise burst: broadband, so its onset and its alignment are unambiguous.
    burst = np.zeros(2 * RATE, np.float32)
    burst[8000:16000] = 0.1 * np.random.default_rng(3).standard_normal(8000)
    tail = slice(int(1.05 * RATE), int(1.3 * RATE))
    assert not np.any(burst[tail])
    for rir, (_, measured, *_) in zip(bank.rirs, bank.params):
        wet = rooms.reverberate(burst, rir)
        assert len(wet) == len(burst) and wet.dtype == np.float32
        assert np.sqrt(np.mean(wet.astype(np.float64) ** 2)) == pytest.approx(np.sqrt(np.mean(burst ** 2.0)), rel=1e-4)
        # Energy keeps arriving after the tone has stopped.
        tail_db = 10 * np.log10(np.mean(wet[tail] ** 2.0) / np.mean(burst[8000:16000] ** 2.0))
        assert tail_db > -45, (measured, tail_db)
        # The direct sound is not delayed: the onset and the best-matching lag stay put.
        onset = int(np.argmax(np.abs(wet) > 0.2 * np.abs(wet).max()))
        assert 8000 - 3 <= onset < 8000 + 50
        lags = np.arange(-20, 21)
        corr = [np.dot(wet[8000 + k : 9000 + k], burst[8000:9000]) for k in lags]
        assert abs(lags[int(np.argmax(corr))]) <= 1
    # A longer room decay leaves a louder tail (the longest vs the shortest of the bank).
    wets = [rooms.reverberate(burst, r) for r in bank.rirs]
    tails = [np.mean(w[tail] ** 2.0) for w in wets]
    assert tails[int(np.argmax(bank.params[:, 1]))] > tails[int(np.argmin(bank.params[:, 1]))]


def test_noise_is_added_at_the_asked_snr_against_the_active_speech_level(noise_dir):
    speech = voice(3.0)
    noises = background.load_noise_set(str(noise_dir), "train")
    noise = noises.excerpt(len(speech), RATE, np.random.default_rng(1))
    mixed = background.add_noise(speech, noise, 10.0, RATE)
    added = mixed.astype(np.float64) - speech
    assert 10 * np.log10(np.mean(speech ** 2.0) / np.mean(added**2)) == pytest.approx(10.0, abs=0.5)
    # Pauses do not lower the speech level: a clip half silent gets the same noise level.
    paused = speech.copy()
    paused[: len(paused) // 2] = 0
    added = background.add_noise(paused, noise, 10.0, RATE).astype(np.float64) - paused
    active = paused[len(paused) // 2 :]
    assert 10 * np.log10(np.mean(active ** 2.0) / np.mean(added**2)) == pytest.approx(10.0, abs=0.5)


@needs_nonspeech
def test_degraded_noise_is_a_test_noise_at_10_db_and_seeded():
    speech = voice(3.0)
    degrade = rooms.Degrader("noise")  # the default folder: ../shared/data/nonspeech
    assert set(degrade.conditions.noise.files) == set(background.noise_split(NONSPEECH)[1])
    for seed in (0, 1, 2):
        out = degrade(speech, RATE, seed)
        added = out.astype(np.float64) - speech
        assert 10 * np.log10(np.mean(speech ** 2.0) / np.mean(added**2)) == pytest.approx(10.0, abs=0.5)
    assert np.array_equal(degrade(speech, RATE, 5), degrade(speech, RATE, 5))
    assert not np.array_equal(degrade(speech, RATE, 5), degrade(speech, RATE, 6))


def test_telephone_band_removes_energy_above_4_khz():
    x = (0.1 * np.random.default_rng(0).standard_normal(2 * RATE)).astype(np.float32)
    above, mid = band_energy(x, 4000, 8000), band_energy(x, 500, 3000)
    drawn = [rooms.draw_channel(np.random.default_rng(seed)) for seed in range(40)]
    phones = [c for c in drawn if c.band is not None]
    assert phones and len(phones) < len(drawn)  # drawn sometimes, not always
    for channel in phones[:3] + [rooms.Channel(band=(300.0, 3400.0), codec="gsm")]:
        y = rooms.apply_channel(x, RATE, channel)
        assert len(y) == len(x) and y.dtype == np.float32
        assert 10 * np.log10(band_energy(y, 4000, 8000) / above) < -40  # gone
        assert 10 * np.log10(band_energy(y, 500, 3000) / mid) > -6  # the speech band stays
    wide = next(c for c in drawn if c.band is None and c.codec != "mp3")
    assert 10 * np.log10(band_energy(rooms.apply_channel(x, RATE, wide), 4000, 8000) / above) > -20


def test_noise_split_is_disjoint_stable_and_covers_each_category(noise_dir):
    train, test = background.noise_split(noise_dir)
    assert not set(train) & set(test) and (train, test) == background.noise_split(noise_dir)
    everything = {p.relative_to(noise_dir).as_posix() for p in noise_dir.rglob("*.*") if p.suffix != ".txt"}
    assert set(train) | set(test) == {p for p in everything if "/speech/" not in p}
    train_categories = {n.rsplit("/", 1)[0] for n in train}
    test_categories = {n.rsplit("/", 1)[0] for n in test}
    # Every category with two sources or more on both sides; one lone song on one side.
    assert {"hum", "street", "kitchen"} <= train_categories & test_categories
    assert ("radio/music" in train_categories) != ("radio/music" in test_categories)
    aircon = {n for n in train + test if "aircon" in n}
    assert aircon <= set(train) or aircon <= set(test)  # takes of one machine stay together


@needs_nonspeech
def test_shared_noise_folder_split_covers_its_categories_and_leaves_speech_out():
    train, test = background.noise_split(NONSPEECH)
    assert not set(train) & set(test)
    for part in (train, test):
        assert {n.rsplit("/", 1)[0] for n in part} == CATEGORIES
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.35


def test_each_new_switch_changes_the_output_only_when_on_and_seeds_reproduce(cache, noise_dir):
    x = voice(1.0, amplitude=0.3)
    assert np.array_equal(WaveAugmenter(AugmentConfig(**OLD_OFF))(x, RATE, seed=1), x)
    switches = {"room": dict(room=True, room_p=1.0, room_count=2),
                "background": dict(background=True, background_p=1.0, noise_dir=str(noise_dir)),
                "channel": dict(channel=True, channel_p=1.0)}
    outputs = {}
    for name, on in switches.items():
        aug = WaveAugmenter(AugmentConfig(**OLD_OFF, **on), cache_dir=cache)
        a, b, c = aug(x, RATE, seed=3), aug(x, RATE, seed=3), aug(x, RATE, seed=4)
        assert not np.allclose(a, x, atol=1e-3), name
        assert np.array_equal(a, b) and not np.array_equal(a, c), name
        assert a.dtype == np.float32 and len(a) == len(x) and np.abs(a).max() <= 1.0
        outputs[name] = a
        off = WaveAugmenter(AugmentConfig(**OLD_OFF, **{**on, **{name: False}}), cache_dir=cache)
        assert np.array_equal(off(x, RATE, seed=3), x), name
        never = WaveAugmenter(AugmentConfig(**OLD_OFF, **{**on, f"{name}_p": 0.0}), cache_dir=cache)
        assert np.array_equal(never(x, RATE, seed=3), x), name
    # All on, with the old transforms too: seeded, in range, and the old part unchanged by it.
    everything = AugmentConfig(p=1.0, dynamic_range=True, speed=True,
                               **{k: v for on in switches.values() for k, v in on.items()})
    aug = WaveAugmenter(everything, cache_dir=cache)
    y = aug(x, RATE, seed=9)
    assert np.array_equal(y, aug(x, RATE, seed=9)) and np.abs(y).max() <= 1.0
    # Loud input: room + noise never push it past full scale.
    loud = WaveAugmenter(AugmentConfig(**OLD_OFF, **switches["room"], **switches["background"],
                                       background_snr_db=(0.0, 0.0)), cache_dir=cache)
    assert np.abs(loud(voice(1.0, amplitude=0.99), RATE, seed=2)).max() <= 1.0


def test_cache_keys_keep_old_copies_and_never_hold_the_noise_path(cache, noise_dir, tmp_path):
    assert AugmentConfig().key() == LEGACY_KEY
    assert AugmentConfig(noise_dir="/somewhere/else").key() == LEGACY_KEY
    assert WaveAugmenter(AugmentConfig()).key() == LEGACY_KEY
    for change in (dict(room=True), dict(channel=True), dict(background=True), dict(room_p=0.9),
                   dict(background_snr_db=(5.0, 20.0))):
        assert AugmentConfig(**change).key() != LEGACY_KEY, change
    # Back from JSON (lists): still the defaults, still the old key.
    assert AugmentConfig.from_dict({"room_rt60_s": [0.2, 1.0]}).key() == LEGACY_KEY
    # The same noise files in another folder: the same key, with no absolute path in it.
    import shutil

    copy = tmp_path / "elsewhere"
    shutil.copytree(noise_dir, copy)
    a = WaveAugmenter(AugmentConfig(background=True, noise_dir=str(noise_dir))).key()
    b = WaveAugmenter(AugmentConfig(background=True, noise_dir=str(copy))).key()
    assert a == b and str(noise_dir) not in a and "noise_files" in a
    (copy / "hum" / "f.wav").write_bytes((noise_dir / "hum" / "a.wav").read_bytes())
    # Another set of noises is another recipe (when the new file lands in training).
    if "hum/f.wav" in background.noise_split(copy)[0]:
        assert WaveAugmenter(AugmentConfig(background=True, noise_dir=str(copy))).key() != a


def test_a_missing_or_empty_noise_folder_is_a_one_line_error(tmp_path, monkeypatch):
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(StreamemoError) as err:
            WaveAugmenter(AugmentConfig(background=True, noise_dir=str(folder)))
        assert err.value.exit_code == 2 and "\n" not in str(err.value) and str(folder) in str(err.value)
        assert "noise_dir" in str(err.value) and "missing" in str(err.value)
    # "" means $STREAMEMO_NOISE_DIR when set.
    monkeypatch.setenv("STREAMEMO_NOISE_DIR", str(tmp_path / "missing"))
    with pytest.raises(StreamemoError, match="missing"):
        rooms.Degrader("noise")
    WaveAugmenter(AugmentConfig(noise_dir=str(tmp_path / "missing")))  # background off: no check
    # One recording trains, but leaves nothing unheard for the degraded test.
    sf.write(tmp_path / "hum.wav", np.full(1600, 0.1), RATE)
    assert WaveAugmenter(AugmentConfig(background=True, noise_dir=str(tmp_path))).conditions.noise.files == ["hum.wav"]
    with pytest.raises(StreamemoError, match="too few noise sources"):
        rooms.Degrader("noise", noise_dir=str(tmp_path))


def test_degrader_spec_is_checked_seeded_and_uses_the_test_rooms(cache, noise_dir):
    for bad in ("reverb+wind", "", "reverb+"):
        with pytest.raises(StreamemoError) as err:
            rooms.Degrader(bad, noise_dir=str(noise_dir), cache_dir=cache)
        assert err.value.exit_code == 2 and "\n" not in str(err.value) and "reverb+noise" in str(err.value)
    x = voice(1.5, amplitude=0.3)
    reverb = rooms.Degrader("reverb", cache_dir=cache)
    y = reverb(x, RATE, seed=11)
    test_bank = rooms.rir_bank(rooms.TEST_RIR_SEED, rooms.TEST_RIR_COUNT, cache_dir=cache)
    assert any(np.allclose(y, rooms.fit_level(rooms.reverberate(x, r)), atol=1e-6) for r in test_bank.rirs)
    full = rooms.Degrader("channel+noise+reverb", noise_dir=str(noise_dir), cache_dir=cache)
    assert full.spec == "reverb+noise+channel" and full.key() == rooms.Degrader(
        "reverb+noise+channel", noise_dir=str(noise_dir), cache_dir=cache).key()
    assert set(full.conditions.noise.files) == set(background.noise_split(noise_dir)[1])
    a, b, c = full(x, RATE, 11), full(x, RATE, 11), full(x, RATE, 12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and len(a) == len(x) and np.abs(a).max() <= 1.0
    # The degraded channel is a telephone line: nothing left above 4 kHz.
    assert band_energy(a, 4000, 8000) < 1e-4 * band_energy(a, 300, 3400)


def test_degraded_copies_always_go_through_a_room_and_noise_after_the_usual_copies(cache, noise_dir):
    """`degraded_copies` adds copies with the recipe's rooms and noise always on, numbered after
    the `wave_copies` (Batches draws 0 for the original, then 1, 2, ...), cached apart from them."""
    from streamemo.train.recipe import TrainConfig

    config = TrainConfig(wave_copies=2, degraded_copies=1,
                         augment=AugmentConfig(room=True, background=True, noise_dir=str(noise_dir)))
    plans = config.copy_augments()
    assert [(a.room_p, a.background_p, k) for a, k in plans] == [(0.5, 0.5, 0), (0.5, 0.5, 1), (1.0, 1.0, 0)]
    assert plans[2][0].key() != plans[0][0].key()  # its own cache entries
    assert TrainConfig(degraded_copies=0).copy_augments() == [(TrainConfig().augment, 0), (TrainConfig().augment, 1)]
    clean = voice(1.0)
    degraded = WaveAugmenter(plans[2][0], cache)
    for seed in range(3):  # every draw holds a room's tail and noise in the gaps
        out = degraded(np.concatenate([clean, np.zeros(8000, np.float32)]), 16000, seed=seed)
        assert np.sqrt(np.mean(out[-4000:] ** 2)) > 1e-4
