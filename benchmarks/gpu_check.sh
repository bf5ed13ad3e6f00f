#!/usr/bin/env bash
# The GPU check of issues 16 and 28, prepared once: run it whenever a CUDA machine is lent (CI
# never has one). For the log-mel model (`small`) it checks the frontend on the GPU against the
# CPU and times the frontend, training steps and batched scoring; for the encoder model (the
# default, or an untrained stand-in with its architecture while models/default does not
# exist) it checks Whisper's encoder features and the live pipeline's probabilities on the GPU
# against the CPU and times encoder batches, a file's scoring and the head's training steps
# (benchmarks/gpu_check.py says what each figure is), writing gpu_check.json and
# nvidia-smi.txt to OUT_DIR. Without a CUDA GPU it says so and exits 1 having checked nothing.
# The CPU dry run took 2 min 13 s on 2 busy cores (2026-12-07); not yet run on a GPU.
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]          # OUT_DIR: $OUT if set, else benchmarks/results
#     PYTHON=.venv/bin/python GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh /tmp/x   # a dry run here
#
# The machine's python3 must hold torch with CUDA, numpy, scipy and safetensors (the lent
# H200 image does). What streamemo needs beyond those travels as wheels in .whl/, made here
# on a machine with PyPI:
#
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#         -d .whl nnAudio==0.3.4 soxr==0.5.0.post1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 silero-vad==6.2.3
#
# and the device call carries it: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
out="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site .whl/*.whl
    export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$out/nvidia-smi.txt"
"$python" benchmarks/gpu_check.py --device "${GPU_CHECK_DEVICE:-cuda}" --out "$out/gpu_check.json"
