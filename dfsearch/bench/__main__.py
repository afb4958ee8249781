"""python -m dfsearch.bench {ray,models,data,prepare,search,planted,mlflow,sweep} [options] — see each benchmark's --help."""

import importlib
import sys

BENCHES = {"ray": "Ray overhead per trial (and its parts) vs the same loop in plain Python",
           "models": "r3d-50 forward+backward time and memory: plain / SE / non-local (fused, naive)",
           "data": "clip-cache loading vs mp4 decoding; every-k face tracking vs every frame",
           "prepare": "prepare frames/s on one process vs a local 2-node Ray cluster (prepare --address), same cache",
           "search": "a synthetic ablation as a full grid and with ASHA: same top-1? fraction of the trial-epochs",
           "planted": "per-frame detector vs 3D ResNet on the synthetic temporal and spatial families: planted ranking recovered?",
           "mlflow": "Tune's callback time per result: MLflow calls inline vs recorded for the background writer (delayed server)",
           "sweep": "K trials packed on one GPU at gpus_per_worker 1 / 0.5 / 0.25 vs the bare loop: trials/h, clips/s, GPU busy, data wait, memory, vs the estimate"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print(__doc__)
        for name, what in BENCHES.items():
            print(f"  {name:8s} {what}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"dfsearch.bench.{argv[0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
