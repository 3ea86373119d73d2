#!/usr/bin/env bash
# `make demo`: kcode fix, headless and offline, on a temporary copy of examples/calc with kcode's tiny
# demonstration model. Its weights are random, so it writes gibberish and changes nothing: the point is the
# whole stack (config, agent loop, local engine, checkpoints) running end to end with no network and no key.
# Nothing outside the temporary directory is written: sessions and the model go there too.
set -euo pipefail
examples=$(cd "$(dirname "$0")" && pwd)
kcode=${KCODE:-kcode}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -R "$examples/calc" "$scratch/calc"
task="add() in calc.py returns the difference; make test_add in test_calc.py pass"

echo "demo: kcode fix $scratch/calc --task \"$task\" (tiny local model, offline)"
status=0
XDG_DATA_HOME="$scratch/data" "$kcode" fix "$scratch/calc" --config "$examples/demo.toml" --profile demo \
    --model local --task "$task" --max-steps 2 || status=$?
case $status in
  0) echo "demo: kcode exited 0: it changed the copy (the diff is above)" ;;
  1) echo "demo: kcode exited 1: it finished without changes, as a model with random weights does" ;;
  *) echo "demo: kcode exited $status" >&2; exit "$status" ;;
esac
echo "demo: examples/calc is untouched. With a real model:"
echo "  export MOONSHOT_API_KEY=sk-...  # or --model local:PATH with a K2 checkpoint"
echo "  cp -R examples/calc /tmp/calc && kcode fix /tmp/calc --task \"$task\" --yes"
