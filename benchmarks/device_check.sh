#!/usr/bin/env bash
# The prepared check for a lent GPU machine (issue 27, item 5): one call, about 8 minutes, every figure under $OUT.
#
#   On the device tool:  run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=500)
#   (a lease has 15 device minutes, start included: BUDGET_S=240 and timeout_s=320 leave time to rerun once)
#   Here, to try it:     DEVICE=cpu CONFIG="config/config.yaml config/micro.yaml" BUDGET_S=300 WHEELS=none PYTHON=python \
#                          bash benchmarks/device_check.sh
#
# The machine is bare (its python3 holds torch and torchaudio, no Snakemake, no eSpeak): the packages it lacks travel
# as wheels in .whl (benchmarks/device_wheels.txt says which and how to fetch them). In order, each time-boxed:
#   1. env.txt         the GPU, torch, CUDA
#   2. throughput.json paper-size training step, fp32 and mixed, on synthetic batches (steps/s, s of audio per s)
#   3. protocol.json   phase1 and baseline trained side by side to the first step target (the 1k role) on the paper
#                      corpus, then their per-stage perplexity; stopped at the deadline with the step reached
#   4. resume.json     deterministic training, killed and resumed: bit-identical to a straight run?
set -uo pipefail
out=${OUT:-results/device_check}
device=${DEVICE:-cuda}
budget=${BUDGET_S:-420}
wheels=${WHEELS:-.whl}
py=${PYTHON:-python3}
read -r -a config <<<"${CONFIG:-config/config.yaml}"
mkdir -p "$out"
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }

if [ -d "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl \
        && export PYTHONPATH=/tmp/site || { echo "error: the carried wheels did not install" >&2; exit 1; }
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$py" -c "import soundfile, jsonschema, yaml, scipy, streamvc_rvq" \
    || { echo "error: a package is missing: see benchmarks/device_wheels.txt" >&2; exit 1; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'threads', torch.get_num_threads())"
} | tee "$out/env.txt"

echo "== throughput ($(left) s left)"
timeout 150 "$py" benchmarks/training_throughput.py "${config[@]/#/--config=}" --device "$device" \
    --threads 8 --steps 5 --rounds 2 --precision fp32 mixed --output "$out/throughput.json" 2>&1 | tail -4

echo "== protocol ($(left) s left)"
"$py" benchmarks/device_protocol.py --config "${config[@]}" --device "$device" --deadline-s $(($(left) - 90)) \
    --work results/device --output "$out/protocol.json" 2>&1 | grep -E '^(corpus|phase1|baseline|note|error)' | cut -c1-600

echo "== resume ($(left) s left)"
timeout $(($(left) > 30 ? $(left) : 30)) "$py" benchmarks/kill_resume.py --config "${config[@]}" --device "$device" \
    --deterministic --trials 1 --steps 12 --every-steps 4 --manifest results/device/corpus/manifest.csv \
    --output "$out/resume.json" 2>&1 | tail -3
echo "== done in $((SECONDS - start)) s; figures in $out"
