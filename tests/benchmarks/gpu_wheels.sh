#!/usr/bin/env bash
# Gather the wheels gpu_check.sh installs on a GPU machine that has torch and CUDA but not
# DeepSpeed (or the rest of gpu_requirements.txt), into .gpu-wheels/ (git-ignored; carry it).
#
#   tests/benchmarks/gpu_wheels.sh [PYTHON_VERSION [FREEZE_FILE]]
#
# Ask the GPU machine first, in one cheap call: `python3 --version; python3 -m pip freeze`.
# PYTHON_VERSION (e.g. 3.12; default: this python's) must be its python, as binary wheels
# (pyarrow, cryptography, pydantic-core, ...) must match it; FREEZE_FILE (its `pip freeze`)
# leaves out what it already has. Carried paths are limited to 64 MiB and pyarrow alone is
# ~55 MB, so the freeze file matters when that machine has anything else missing. DeepSpeed ships only a source
# distribution: it is built here into a pure-python wheel (its CUDA ops compile on first use,
# and the trainer uses none of them).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=${1:-$(python3 -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')}
wheels=.gpu-wheels
rm -rf "$wheels" && mkdir -p "$wheels"
have=${2:-/dev/null}
normalise() { tr 'A-Z_' 'a-z-' | sed -E 's/[<>=!~;[ ].*//'; }
installed=$(normalise < "$have" | sort -u)
: > "$wheels/.binary.txt"
# Carried even where that machine has one: pydantic-core needs a recent typing-extensions, and an
# older one there would fail at import, after the install.
always="typing-extensions"
grep -v '^#' tests/benchmarks/gpu_requirements.txt | grep . | grep -v '^deepspeed' | while read -r requirement; do
  name=$(echo "$requirement" | normalise)
  if ! grep -qx "$name" <<< "$installed" || grep -qx "$name" <<< "$always"; then echo "$requirement" >> "$wheels/.binary.txt"; fi
done
python3 -m pip download --no-deps --only-binary=:all: --python-version "$version" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$wheels" -r "$wheels/.binary.txt"
python3 -m pip wheel --no-deps --no-build-isolation -w "$wheels" "$(grep '^deepspeed' tests/benchmarks/gpu_requirements.txt)"
rm "$wheels/.binary.txt"
ls "$wheels"
size=$(du -sm "$wheels" | cut -f1)
echo "$size MiB in $wheels"
if [ "$size" -gt 60 ]; then
  echo "warning: over what can be carried with the working tree (64 MiB in all); pass the GPU machine's pip freeze"
fi
