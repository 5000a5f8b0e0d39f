#!/usr/bin/env bash
# Wheels the GPU machine lacks, built here into .gpu-wheels/ (ignored by git) for its Python
# (3.12, x86-64; its image has CUDA torch, transformers, pyarrow, but not these): diffusers,
# DeepSpeed and their small dependencies. benchmarks/gpu.sh installs them there.
#   bash scripts/gpu_wheels.sh        # then: the device tool's run, carry [".gpu-wheels"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
out=.gpu-wheels
rm -rf "$out" && mkdir -p "$out"
pip=(.venv/bin/python -m pip -q)
# pure Python, the versions this project pins or runs with here
"${pip[@]}" download --no-deps -d "$out" diffusers==0.42.1 hjson==3.1.0 pydantic==2.14.4 \
    annotated-types==0.8.0 typing-inspection==0.4.5 importlib_metadata==10.2.0
# DeepSpeed is published as source only: a wheel of its Python (its C++ ops compile just in
# time where they are used; the GPU check uses none)
DS_BUILD_OPS=0 "${pip[@]}" wheel --no-deps --no-build-isolation -w "$out" deepspeed==0.19.8
# compiled, for the GPU machine's CPython 3.12
"${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$out" \
    pydantic-core==2.50.5
ls -1 "$out"
du -sh "$out"
