#!/usr/bin/env bash
# The GPU check of issue 20, one command on a lent accelerator machine (H100/H200 image: Python 3.12 with PyTorch,
# timm, einops, OpenCV-headless, pandas, tqdm, PyYAML; NO Ray, MLflow or PyAV; no network), within ~8 minutes:
#   1. `python -m dfsearch.bench sweep --device cuda`: K r3d-50 trials at gpus_per_worker 1 / 0.5 / 0.25 through
#      run's path (Tune -> TorchTrainer -> MLflow) against the bare loop, NVML busy fraction included;
#   2. one real cell of search_spaces/placement.yaml at real size (16x112², r3d-50) with gpus_per_worker 0.25, two
#      epochs, on the synthetic data (`run --set`);
#   3. without Ray (when the wheels below are missing): the bare loop at paper size alone
#      (`bench sweep --bare-only`, no Ray), so the run still says what one trial does on the GPU.
# Results land in $OUT (they come back to the caller).
#
# Ray, MLflow and PyAV are not on the image and nothing can be downloaded there: they travel as wheels in
# .device/whl (ignored by git; the device tool carries at most 64 MiB in all, and Ray's cp312 wheel alone is most
# of that, so MLflow goes as mlflow-skinny). Prepare once, in the project root of a machine with the registry:
#   echo /.device/ >> .git/info/exclude && mkdir -p .device/whl
#   python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .device/whl ray==2.60.0 mlflow-skinny==3.17.2 av nvidia-ml-py
#   du -sh .device   # must stay under 64 MiB with the data cache: drop what the image has (torch, numpy, pandas ...)
# The synthetic data: built on the machine (PyAV from the wheels; OpenCV's Haar cascade for the faces; an OpenCV
# build without cascades has been seen on GPU machines: then build the cache here and carry it,
#   DFSEARCH_CACHE=.device/cache python -m dfsearch.prepare synthetic ... or one `bench sweep --device cpu` run).
# Then one run of the device tool: command `bash scripts/gpu-check.sh`, carry [".device"], timeout_s 540.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}; SITE=$(mktemp -d); mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if [ -d .device/cache ]; then export DFSEARCH_CACHE="$PWD/.device/cache"; else export DFSEARCH_CACHE="$(mktemp -d)"; fi
if ls .device/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-compile --no-cache-dir --find-links .device/whl --target "$SITE" \
    $(ls .device/whl/*.whl) 2>&1 | tail -5 | tee "$OUT/pip.txt"
  export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH"
fi
{ nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } 2>&1 | tee "$OUT/device.txt"
have() { python3 -c "import $1" >/dev/null 2>&1; }
missing=""; for m in ray mlflow av pynvml; do have "$m" || missing="$missing $m"; done
[ -n "$missing" ] && echo "missing on this machine:$missing (see the header: .device/whl)" | tee -a "$OUT/device.txt"
start=$(date +%s)

if have ray && have mlflow; then
  echo "== 1. bench sweep --device cuda (packings 1, 0.5, 0.25)"
  # --overhead-out: the estimate's GPU overhead, calibrated from the packing-1 sweep (paste into dfsearch/overhead.yaml)
  timeout 300 python3 -m dfsearch.bench sweep --device cuda --trials 4 --packings 1,0.5,0.25 --out "$OUT/bench-sweep.json" \
    --overhead-out "$OUT/overhead-gpu.yaml" \
    2>&1 | tee "$OUT/bench-sweep-cuda.txt"
  echo "== 2. one placement.yaml cell at real size, gpus_per_worker 0.25, two epochs (synthetic data)"
  left=$(( 470 - ($(date +%s) - start) ))
  if [ "$left" -gt 60 ]; then
    cell=$(mktemp -d)/placement-cell.yaml
    python3 - "$cell" <<'PY'
import sys, yaml
space = yaml.safe_load(open("search_spaces/placement.yaml"))
space["model"]["placement"] = "1,2,3,4"; space["protocol.name"] = "single:DF"  # one cell of the grid
space["model"]["pretrained"] = "none"  # no Kinetics files on the machine
space["data"]["root"] = "synthetic"; space["name"] = "gpu-cell"
open(sys.argv[1], "w").write(yaml.safe_dump(space))
PY
    timeout "$left" python3 -m dfsearch.run "$cell" --work-dir "$(mktemp -d)" \
      --set resources.gpus_per_worker=0.25 --set train.epochs=2 2>&1 | tail -40 | tee "$OUT/run-placement-cell.txt"
  else
    echo "skipped: ${left}s left of the ~8 min budget" | tee "$OUT/run-placement-cell.txt"
  fi
else
  echo "== cannot run bench sweep or run here: no Ray/MLflow on this image (carry them in .device/whl, see the header)"
  echo "== 3. the bare loop at paper size alone (no Ray)"
  timeout 300 python3 -m dfsearch.bench sweep --device cuda --bare-only --out "$OUT/bench-sweep.json" 2>&1 | tee "$OUT/bench-sweep-bare.txt"
fi
echo "done in $(( $(date +%s) - start )) s; files in $OUT"
