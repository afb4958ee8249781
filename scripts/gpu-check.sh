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
# Ray, MLflow and PyAV are not on the image and nothing can be downloaded there: they travel in .device/ (ignored by
# git through .git/info/exclude; the device tool carries at most 64 MiB in all, raw sizes, tracked files included).
# Preferred: .device/site.tar.xz, a pruned, stripped cp312 site-packages (~50 MiB) unpacked into a temp dir and put
# first on PYTHONPATH. Prepare once, in the project root of a machine with the registry (Python >= 3.12 for pip):
#   echo /.device/ >> .git/info/exclude; W=/tmp/whl312 S=/tmp/bsite; mkdir -p .device
#   python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d $W \
#     "ray[default,tune,train]==2.60.0" mlflow-skinny==3.17.2 sqlalchemy alembic av
#   for p in ray av mlflow_skinny sqlalchemy alembic mako sqlparse cachetools databricks_sdk cryptography cffi \
#     pycparser fastapi starlette uvicorn gitpython gitdb smmap importlib_metadata python_dotenv pydantic \
#     pydantic_core annotated_types typing_inspection jsonschema jsonschema_specifications referencing rpds_py \
#     aiohttp_cors colorful smart_open opencensus opencensus_context googleapis_common_protos tensorboardx \
#     opentelemetry_api opentelemetry_sdk opentelemetry_proto opentelemetry_semantic_conventions \
#     opentelemetry_exporter_prometheus; do  # what the image lacks (py-spy, virtualenv, google-auth: not needed)
#     python3.12 -m pip install -q --no-index --no-deps --no-compile --target $S $W/$p-[0-9]*.whl; done
#   python3.12 -m pip install --no-index --no-deps --target $S/_protobuf $W/protobuf-*.whl  # used only if the image's
#     # protobuf is too old for googleapis-common-protos' gencode (checked below)
#   cd $S && rm -rf ray/jars ray/rllib ray/llm ray/serve bin/serve ray/tune/examples ray/train/examples \
#     ray/dashboard/client/build jsonschema/tests referencing/tests jsonschema_specifications/tests gitdb/test smmap/test
#   mkdir -p ray/dashboard/client/build/static && echo '<!doctype html>' > ray/dashboard/client/build/index.html
#     # the dashboard head refuses to start without that folder; the frontend (18 MB) is left out, the API stays
#   find . -name __pycache__ -prune -exec rm -rf {} +; sed -i '1s|^#!.*python.*$|#!/usr/bin/env python3|' bin/*
#   find . -type f \( -name '*.so' -o -name '*.so.*' -o -path ./ray/core/src/ray/raylet/raylet \
#     -o -path ./ray/core/src/ray/gcs/gcs_server \) -exec strip --strip-unneeded {} \;   # saves ~70 MB
#   mkdir _cv2data && cp <opencv-python 4.x>/cv2/data/haarcascade_frontalface_default.xml _cv2data/  # see below
#     # (OpenCV 5.x has no CascadeClassifier at all: there only a carried .device/cache helps)
#   tar cf - --owner=0 --group=0 . | xz -9 -T2 > <project>/.device/site.tar.xz; du -sh <project>/.device  # < 55 MiB
# Fallback: .device/whl/*.whl (pip install --target at run time; Ray's cp312 wheel alone is most of the 64 MiB):
#   python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .device/whl ray==2.60.0 mlflow-skinny==3.17.2 av nvidia-ml-py   # then drop what the image has
# The synthetic data: built on the machine (PyAV from the wheels; OpenCV's Haar cascade for the faces; an OpenCV
# build without cascades has been seen on GPU machines (that image's OpenCV 5 has no CascadeClassifier at all): then
# build the cache here, small enough to carry (12 pairs: 120 videos, 51 MB with their mp4s, which the cache checks):
#   DFSEARCH_CACHE=.device/cache python -m dfsearch.bench sweep --device cpu --pairs 12 ... (or ensure_prepared of
#   bench.sweep.PAPER's data with synthetic_pairs 12), and give the GPU run the same PAIRS=12.
# The bundle (~50 MiB) and that cache (~51 MiB) do not fit one call's 64 MiB: two calls on the same warm machine
# (files outside the checkout stay while it is held; it goes back after 30 s idle, so send the second at once):
#   1. command `bash scripts/gpu-check.sh unpack`, carry [".device/site.tar.xz"]: unpacks it to $DEVICE_SITE;
#   2. command `PAIRS=12 bash scripts/gpu-check.sh`, carry [".device/cache"], timeout_s 540.
# With OpenCV 4 there, one call does: `bash scripts/gpu-check.sh`, carry [".device/site.tar.xz"], timeout_s 540.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}; DEVICE_SITE=${DEVICE_SITE:-/root/dfsearch-site}; mkdir -p "$OUT"
if [ "${1:-}" = unpack ]; then  # the first of two calls: the bundle only, kept outside the checkout
  rm -rf "$DEVICE_SITE" && mkdir -p "$DEVICE_SITE" && tar xJf .device/site.tar.xz -C "$DEVICE_SITE" && du -sh "$DEVICE_SITE"
  python3 -c "import cv2, torch; print('cv2', cv2.__version__, 'CascadeClassifier' if hasattr(cv2, 'CascadeClassifier') else 'no CascadeClassifier', '| torch', torch.__version__)"
  exit
fi
PAIRS=${PAIRS:-}  # synthetic identity pairs of the carried cache (bench sweep --pairs; empty: the bench's default)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if [ -d .device/cache ]; then export DFSEARCH_CACHE="$PWD/.device/cache"; else export DFSEARCH_CACHE="$(mktemp -d)"; fi
if [ -d "$DEVICE_SITE/ray" ] || [ -f .device/site.tar.xz ]; then
  SITE="$DEVICE_SITE"
  [ -d "$SITE/ray" ] || { mkdir -p "$SITE" && tar xJf .device/site.tar.xz -C "$SITE" 2>&1 | tail -5 | tee "$OUT/site.txt"; }
  export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH"
  # googleapis-common-protos' gencode (imported by opencensus, so by Ray's dashboard) needs protobuf >= 6.33.5:
  # an older one on the image is shadowed by the bundle's own
  if ! python3 -c "import google.rpc.code_pb2" >/dev/null 2>&1 && [ -d "$SITE/_protobuf" ]; then
    export PYTHONPATH="$SITE/_protobuf:$PYTHONPATH"; echo "protobuf: the image's is too old, using the bundle's" | tee -a "$OUT/site.txt"
  fi
  # OpenCV builds without cv2.data's Haar cascades (dfsearch/data/faces.py needs the frontal-face one for the
  # synthetic data): copy the bundle's there when cv2 still has CascadeClassifier (4.x). OpenCV 5.x dropped the
  # class itself: then only a carried .device/cache gives the synthetic data
  python3 - "$SITE/_cv2data" <<'PY' 2>&1 | tee -a "$OUT/site.txt"
import os, shutil, sys, cv2
d = getattr(getattr(cv2, "data", None), "haarcascades", "") or os.path.join(os.path.dirname(cv2.__file__), "data", "")
f = "haarcascade_frontalface_default.xml"; src = os.path.join(sys.argv[1], f)
if not hasattr(cv2, "CascadeClassifier"):
    print(f"cv2 {cv2.__version__}: no CascadeClassifier; the synthetic data needs a carried .device/cache")
elif not os.path.isfile(os.path.join(d, f)) and os.path.isfile(src):
    try:
        os.makedirs(d, exist_ok=True); shutil.copy(src, d); print(f"cv2 {cv2.__version__}: copied {f} into {d}")
    except OSError as e:
        print(f"cv2 {cv2.__version__}: no {f} and could not copy it into {d}: {e}")
PY
elif ls .device/whl/*.whl >/dev/null 2>&1; then
  SITE=$(mktemp -d)
  python3 -m pip install -q --no-index --no-compile --no-cache-dir --find-links .device/whl --target "$SITE" \
    $(ls .device/whl/*.whl) 2>&1 | tail -5 | tee "$OUT/pip.txt"
  export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH"
fi
{ nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } 2>&1 | tee "$OUT/device.txt"
have() { python3 -c "import $1" >/dev/null 2>&1; }
missing=""; for m in ray mlflow av pynvml; do have "$m" || missing="$missing $m"; done
[ -n "$missing" ] && echo "missing on this machine:$missing (see the header: .device/site.tar.xz)" | tee -a "$OUT/device.txt"
start=$(date +%s)

if have ray && have mlflow; then
  echo "== 1. bench sweep --device cuda (packings 1, 0.5, 0.25)"
  # --overhead-out: the estimate's GPU overhead, calibrated from the packing-1 sweep (paste into dfsearch/overhead.yaml)
  timeout 330 python3 -m dfsearch.bench sweep --device cuda --trials 4 --packings 1,0.5,0.25 --out "$OUT/bench-sweep.json" \
    ${PAIRS:+--pairs "$PAIRS"} --epochs 2 --overhead-out "$OUT/overhead-gpu.yaml" \
    2>&1 | tee "$OUT/bench-sweep-cuda.txt"
  echo "== 2. one placement.yaml cell at real size, gpus_per_worker 0.25, two epochs (synthetic data)"
  left=$(( 470 - ($(date +%s) - start) ))
  if [ "$left" -gt 60 ]; then
    cell=$(mktemp -d)/placement-cell.yaml
    python3 - "$cell" "$PAIRS" <<'PY'
import sys, yaml
space = yaml.safe_load(open("search_spaces/placement.yaml"))
space["model"]["placement"] = "1,2,3,4"; space["protocol.name"] = "single:DF"  # one cell of the grid
space["model"]["pretrained"] = "none"  # no Kinetics files on the machine
space["data"]["root"] = "synthetic"; space["name"] = "gpu-cell"
if sys.argv[2]:
    space["data"]["synthetic_pairs"] = int(sys.argv[2])  # the carried cache's data
open(sys.argv[1], "w").write(yaml.safe_dump(space))
PY
    timeout "$left" python3 -m dfsearch.run "$cell" --work-dir "$(mktemp -d)" \
      --set resources.gpus_per_worker=0.25 --set train.epochs=2 2>&1 | tail -40 | tee "$OUT/run-placement-cell.txt"
  else
    echo "skipped: ${left}s left of the ~8 min budget" | tee "$OUT/run-placement-cell.txt"
  fi
else
  echo "== cannot run bench sweep or run here: no Ray/MLflow on this image (carry them in .device/site.tar.xz, see the header)"
  echo "== 3. the bare loop at paper size alone (no Ray)"
  timeout 300 python3 -m dfsearch.bench sweep --device cuda --bare-only --out "$OUT/bench-sweep.json" 2>&1 | tee "$OUT/bench-sweep-bare.txt"
fi
echo "done in $(( $(date +%s) - start )) s; files in $OUT"
