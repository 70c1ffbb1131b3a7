#!/usr/bin/env bash
# Re-creates the bundled model examples/quickstart/model: a 3.3M-parameter GPT-2 pretrained from
# scratch by rankforge on the fortunes corpus (Debian package `fortunes`, BSD licence).
# Needs: fortunes and wordnet-base installed (make_data.py), rankforge built in ./build.
set -euo pipefail
cd "$(dirname "$0")"
python3 make_data.py
../../build/tools/rankforge init --config model_config.json --output ../../build/quickstart/init --seed 1 --overwrite
cp tokenizer/* ../../build/quickstart/init/
../../build/tools/rankforge train pretrain.yaml --overwrite
rm -rf model && mkdir -p model
cp ../../build/quickstart/pretrain/model/* model/
cp tokenizer/* model/
echo "[pretrain] model written to $(pwd)/model"
