"""`streamemo spectrogram FILE -o out.png`: the log-mel image a model sees for a file (for a
model on Whisper's encoder, the log-mel its encoder sees)."""

from __future__ import annotations

from pathlib import Path

from streamemo import StreamemoError


def configure(parser) -> None:
    parser.add_argument("file", type=Path, help="an audio file (any format soundfile reads)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    parser.add_argument("--model", metavar="MODEL", default=None,
                        help="use this model's frontend (default: models/default when present, else the stock one)")


def main(args) -> int:
    import numpy as np

    from streamemo.config import DEFAULT_MODEL
    import torch

    from streamemo.audio.files import UnreadableAudio, load_audio
    from streamemo.features import Frontend, FrontendSpec, build_frontend

    if args.output.is_dir():
        raise StreamemoError(f"-o {args.output} is a directory; give the PNG's file name, e.g. "
                             f"{args.output / (args.file.stem + '.png')}", 2)
    spec = FrontendSpec()
    model_path = args.model or (DEFAULT_MODEL if DEFAULT_MODEL.with_suffix(".json").exists() else None)
    if model_path:
        from streamemo.model import load_model

        spec = load_model(model_path).frontend
    try:
        audio = load_audio(args.file, spec.sample_rate)
    except UnreadableAudio as e:
        raise StreamemoError(f"cannot read {e}") from None
    with torch.inference_mode():
        waveform = torch.from_numpy(audio)[None]
        if spec.kind == "whisper":  # the encoder's input: its 384 learnt bands are no picture
            feats = build_frontend(spec).log_mel(waveform)[0].numpy()
        else:
            feats = Frontend(spec)(waveform)[0].numpy()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = len(audio) / spec.sample_rate
    fig, ax = plt.subplots(figsize=(max(4.0, 2.0 * seconds), 3.5))
    im = ax.imshow(feats, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, feats.shape[0]))
    ax.set_xlabel("seconds")
    ax.set_ylabel("MFCC" if spec.kind == "mfcc" else "mel band")
    ax.set_title(f"{args.file.name}: {spec.kind}, {feats.shape[0]} bands, hop {1000 * spec.hop_length // spec.sample_rate} ms")
    fig.colorbar(im, ax=ax, label="coefficient" if spec.kind == "mfcc" else
                 "log10 energy, Whisper's scaling" if spec.kind == "whisper" else "log energy")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=100, format="png")  # the very path given: no ".png" appended to it
    plt.close(fig)
    print(f"wrote {args.output} ({feats.shape[0]} x {feats.shape[1]}, {float(np.max(feats)):.1f} max)")
    return 0
