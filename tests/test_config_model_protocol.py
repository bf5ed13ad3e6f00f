"""Config files, model files and the wire format: valid input round-trips, bad input is named."""

import json
import subprocess
import sys

import pytest
import torch

from streamemo import EMOTIONS, ModelError, StreamemoError
from streamemo.config import Config
from streamemo.features import Frontend, FrontendSpec
from streamemo.model import Model, load_model, model_paths, save_model
from streamemo.stream.inference import inference_network
from streamemo.protocol import ProtocolError, decode, encode


# --- config -------------------------------------------------------------------------

def test_toml_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[audio]\nsource = "USB"\n[pipeline]\nhop_s = 0.5\nsmoothing_tau_s = 2\n')
    config = Config.load(path, {"pipeline.hop_s": 0.1})
    assert config.audio.source == "USB"
    assert config.pipeline.hop_s == 0.1  # the flag wins over the file
    assert config.pipeline.smoothing_tau_s == 2.0 and isinstance(config.pipeline.smoothing_tau_s, float)


def test_print_config_round_trips(tmp_path):
    config = Config.load(None, {"audio.source": 'we"ird', "publish.hwm": 5})
    path = tmp_path / "out.toml"
    path.write_text(config.to_toml())
    assert Config.load(path) == config


@pytest.mark.parametrize("text, message", [
    ("[audio]\nsorce = 1\n", "unknown key 'audio.sorce'"),
    ("[nope]\nx = 1\n", "unknown section [nope]"),
    ("[audio]\nrealtime = \"yes\"\n", "audio.realtime must be a boolean, got str"),
    ("[pipeline]\nhop_s = \"fast\"\n", "pipeline.hop_s must be a number"),
    ("[audio\n", "not valid TOML"),
])
def test_bad_config_names_the_key_and_type(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(StreamemoError) as e:
        Config.load(path)
    assert message in str(e.value) and e.value.exit_code == 2


# --- model files --------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = Model.create("m", EMOTIONS, 2.0, FrontendSpec(kind="mfcc"), "conv1d")
    save_model(model, tmp_path / "m", extra_card={"training": {"note": "test"}})
    return model, tmp_path / "m"


def test_save_load_round_trip(saved):
    model, path = saved
    loaded = load_model(path)
    assert loaded.labels == list(EMOTIONS) and loaded.frontend.kind == "mfcc"
    assert loaded.card["training"] == {"note": "test"}
    x = torch.randn(2, 40, 201)
    model.network.eval()
    torch.testing.assert_close(loaded.network(x), model.network(x))
    assert load_model(str(path) + ".json").id == loaded.id  # either file name works


def test_model_files_are_as_readable_as_any_new_file(saved, tmp_path):
    # A service running as another user must be able to read a model its admin trained.
    _, path = saved
    plain = tmp_path / "plain"
    plain.write_text("x")
    for file in model_paths(path):
        assert file.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777, file


@pytest.mark.parametrize("arch", ["cnn_lstm", "cnn2d", "conv1d"])
def test_inference_network_scores_like_the_trained_one(arch):
    """The Scorer's copy (BatchNorm folded, Linear weights stored transposed, max-pool by
    strided maxima) changes speed, not outputs; odd map sizes exercise the pool's floor mode."""
    torch.manual_seed(2)
    model = Model.create("m", EMOTIONS, 2.0, FrontendSpec(hop_length=320), arch)
    network = model.network
    network.train()
    for _ in range(3):  # move BatchNorm's running statistics away from their initial values
        network(torch.randn(4, 64, 101) * 3 + 1)
    network.eval()
    x = torch.randn(3, 64, 101)
    with torch.no_grad():
        expected = network(x)
    copy = inference_network(network)
    with torch.inference_mode():
        fast = copy(x)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    replaced = (torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm)
    assert not any(isinstance(m, replaced) for m in copy.modules())  # the fast path really ran
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules())  # untouched


def test_missing_model_is_one_clear_line(tmp_path):
    with pytest.raises(ModelError, match=r"model card .*nothing\.json does not exist"):
        load_model(tmp_path / "nothing")


def test_truncated_weights_are_named(saved):
    _, path = saved
    weights, card = model_paths(path)
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="do not match the card"):
        load_model(path)
    data = json.loads(card.read_text())
    del data["weights_sha256"]  # without the hash, safetensors itself must catch it
    card.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_model(path)


def test_weights_for_another_architecture_are_named(saved, tmp_path):
    _, path = saved
    other = Model.create("m", EMOTIONS, 2.0, FrontendSpec(kind="mfcc", n_mfcc=20), "conv1d")
    save_model(other, tmp_path / "other")
    weights, card = model_paths(path)
    weights.write_bytes(model_paths(tmp_path / "other")[0].read_bytes())
    data = json.loads(card.read_text())
    del data["weights_sha256"]
    card.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="do not fit the architecture"):
        load_model(path)


def test_card_that_is_not_json_is_named(saved):
    _, path = saved
    model_paths(path)[1].write_text("{not json")
    with pytest.raises(ModelError, match="is not valid JSON"):
        load_model(path)


def test_loading_never_unpickles(saved):
    """The weights file is safetensors: a header and raw tensors, nothing executable."""
    _, path = saved
    blob = model_paths(path)[0].read_bytes()
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    assert all(v.get("dtype") for k, v in header.items() if k != "__metadata__")


# --- protocol -----------------------------------------------------------------------

def _emotion(**overrides):
    body = dict(seq=1, t_capture=1.0, t_publish=1.01, t_audio=2.0, labels=["a", "b"], probs=[0.3, 0.7],
                raw=[0.2, 0.8], top="b", confidence=0.7, arousal=None, valence=None, voiced=True, speech=0.9, level_db=-20.0,
                source="x", model="m@0")  # labels a, b have no places: no arousal or valence
    body.update(overrides)
    return body


def test_encode_decode_round_trip():
    topic, body = decode(encode("emotion", _emotion()))
    assert topic == "emotion" and body["v"] == 2 and body["probs"] == [0.3, 0.7]
    topic, body = decode(encode("emotion", _emotion(raw=None, top=None, confidence=None, voiced=False)))
    assert body["raw"] is None


def test_typed_messages_keep_the_wire_body_and_refuse_a_bad_one():
    import dataclasses

    from streamemo.protocol import EmotionMessage, decode_message, encode_message

    body = {"v": 2, **_emotion(), "emotions": None}  # every field a message from this build has
    message = EmotionMessage.from_body(body)
    assert message.labels == ("a", "b") and message.to_body() == body
    sent = decode_message(encode_message(message, t_publish=5.0))
    assert sent.t_publish == 5.0 and sent.seq == message.seq
    with pytest.raises(ProtocolError, match="lacks field 'voiced'"):
        EmotionMessage.from_body({k: v for k, v in body.items() if k != "voiced"})
    with pytest.raises(ProtocolError, match="wrong type"):  # an unsent message has no t_publish
        encode("emotion", dataclasses.replace(message, t_publish=None).to_body())
    # A version 1 daemon, older than arousal, valence and speech: its body still reads, those as None.
    old = {k: v for k, v in body.items() if k not in ("arousal", "valence", "speech")} | {"v": 1}
    assert EmotionMessage.from_body(old).arousal is None and EmotionMessage.from_body(old).speech is None
    # Version 2 has every field.
    with pytest.raises(ProtocolError, match="lacks field 'arousal'"):
        EmotionMessage.from_body({**old, "v": 2})
    assert message.speech == 0.9


@pytest.mark.parametrize("frames, message", [
    ([b"emotion", b"{bad json"], "not UTF-8 JSON"),
    ([b"emotion", json.dumps({**_emotion(), "v": 99}).encode()], "schema version 99, this build reads 1 and 2; update"),
    ([b"emotion", json.dumps({**_emotion(), "v": True}).encode()], "schema version True"),
    ([b"emotion", json.dumps({**_emotion(), "v": 2, "speech": 1.5}).encode()], "'speech' must be from 0 to 1"),
    ([b"emotion", json.dumps({k: v for k, v in {**_emotion(), "v": 1}.items() if k != "voiced"}).encode()], "lacks field 'voiced'"),
    ([b"emotion", json.dumps({**_emotion(), "v": 1, "voiced": "yes"}).encode()], "wrong type"),
    ([b"emotion", json.dumps({**_emotion(), "v": 1, "probs": [1.0]}).encode()], "1 values for 2 labels"),
    ([b"emotion", json.dumps({**_emotion(), "v": 1}).replace('0.3,', 'NaN,').encode()], "NaN is not a number"),
    ([b"emotion", json.dumps({**_emotion(), "v": 1, "labels": ["a", 2]}).encode()], "must hold strings"),
    ([b"emotion", json.dumps({**_emotion(), "v": 1, "raw": ["x", 0.5]}).encode()], "must hold finite numbers"),
    ([b"emotion", json.dumps({**_emotion(), "v": 1}).replace('0.8]', '1e400]').encode()], "must hold finite numbers"),
    ([b"emotion", json.dumps({**_emotion(), "v": 1, "level_db": 1}).replace('"level_db":1', '"level_db":-1e999').replace('"level_db": 1', '"level_db": -1e999').encode()], "'level_db' is not finite"),
    ([b"weather", b"{}"], "unknown topic"),
    ([b"emotion"], "expected 2 frames"),
])
def test_malformed_messages_are_named(frames, message):
    with pytest.raises(ProtocolError, match=message):
        decode(frames)


def test_nan_never_reaches_the_wire():
    with pytest.raises(ValueError):
        encode("emotion", _emotion(probs=[float("nan"), 1.0]))


def test_a_model_file_carries_its_frontend_kernels_so_scoring_needs_no_nnaudio(random_model):
    """The daemon imports only what running needs: a saved model holds nnAudio's window and mel
    basis, so a pipeline scores without importing nnAudio or scipy (50 and 16 MB resident)."""
    code = f"""
import sys
import numpy as np
from streamemo.config import PipelineConfig
from streamemo.model import load_model
from streamemo.stream.pipeline import Pipeline
model = load_model({str(random_model)!r})
assert model.frontend_kernels is not None
estimates = Pipeline(model, PipelineConfig(speech_share=0.0)).feed(np.full(40000, 0.1, np.float32))
assert estimates and estimates[0].raw is not None
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"nnAudio", "scipy", "matplotlib", "audiomentations"}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_kernels_that_do_not_fit_the_card_are_named(tmp_path):
    model = Model.create("m", EMOTIONS, 2.0, FrontendSpec(), "cnn_lstm")
    model.frontend_kernels = {"window": torch.ones(400), "mel_basis": torch.ones(64, 257)}
    save_model(model, tmp_path / "m")
    with pytest.raises(ModelError, match="frontend kernels do not fit"):
        load_model(tmp_path / "m")
    # and the kernels a model carries are exactly the ones nnAudio builds
    model.frontend_kernels = None
    save_model(model, tmp_path / "m")
    loaded = Frontend(FrontendSpec(), load_model(tmp_path / "m").frontend_kernels)
    torch.testing.assert_close(loaded.mel_basis_t, Frontend(FrontendSpec()).mel_basis_t, rtol=0, atol=0)
