"""What a trial's MLflow run shows: its name, its dataset input, its config file, its test scores and plots.

Plain functions of a flat trial config or of the per-video test rows; :class:`dfsearch.tune.mlflow_log.
MLflowTrialLogger` puts them on the run.  No Ray here.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag


def run_name(flat: dict[str, Any], extra_keys: list[str] = ()) -> str:
    """``nonlocal@1,2,3,4 · single:Deepfakes · seed 0`` from a canonical flat config; ``extra_keys`` (searched
    keys the name does not show otherwise, e.g. ``optim.lr``) are appended as ``lr=0.001``."""
    from dfsearch.models.registry import display_name

    model = display_name(flat)  # the family's DetectorSpec.display_name
    pretrained = flat.get("model.pretrained", "none")
    if pretrained not in (None, "none"):
        model += f" +{Path(str(pretrained)).stem if os.sep in str(pretrained) else pretrained}"
    shown = {"model.name", "model.attention", "model.placement", "model.space_time", "model.pretrained", "protocol.name", "train.seed"}
    parts = [model, str(flat.get("protocol.name", "?")), f"seed {flat.get('train.seed', 0)}"]
    parts += [f"{k.split('.', 1)[1]}={flat[k]}" for k in extra_keys if k not in shown and k in flat]
    return " · ".join(parts)


def nested(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"model.depth": 10}`` -> ``{"model": {"depth": 10}}`` (tuples as lists: YAML's safe dumper)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_yaml(flat: dict[str, Any], header: str = "") -> str:
    import yaml

    text = yaml.safe_dump(nested(flat), sort_keys=False, default_flow_style=False)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def dataset_input(flat: dict[str, Any], data_fingerprint: str, n_videos: int | None = None) -> DatasetInput:
    """The Dataset column: FaceForensics++ (or the synthetic stand-in) at a root, compression and protocol."""
    root = str(flat.get("data.root", "?"))
    compression = str(flat.get("data.compression", "?"))
    protocol = str(flat.get("protocol.name", "?"))
    label = "synthetic FF++" if root == "synthetic" else "FF++"
    profile = {"root": root, "compression": compression, "protocol": protocol, "fingerprint": data_fingerprint}
    if n_videos is not None:
        profile["prepared_videos"] = n_videos
    entity = Dataset(
        name=f"{label} {compression} {protocol}",
        digest=(data_fingerprint or "unknown")[:36],
        source_type="local",
        source=json.dumps({"uri": root}),
        profile=json.dumps(profile),
    )
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", "train/val/test")])


def scores_csv(rows: list, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "prob_fake", "predicted"])
        for video_id, label, prob in rows:
            w.writerow([video_id, int(label), f"{float(prob):.8f}", int(float(prob) >= 0.5)])


def read_scores_csv(path: str | Path) -> dict[str, tuple[int, float]]:
    with open(path, newline="") as f:
        return {r["video_id"]: (int(r["label"]), float(r["prob_fake"])) for r in csv.DictReader(f)}


def score_plots(rows: list, folder: Path, title: str) -> list[Path]:
    """ROC curve and fake-probability histograms (real vs fake) of one evaluation, as small PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.array([int(r[1]) for r in rows])
    probs = np.array([float(r[2]) for r in rows])
    out = []
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if len(set(labels.tolist())) == 2:
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, lw=2, label=f"AUC {roc_auc_score(labels, probs):.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "one class only: no ROC", ha="center")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate", title=f"ROC · {title}", xlim=(0, 1), ylim=(0, 1.01))
    ax.title.set_fontsize(8)
    fig.tight_layout()
    out.append(folder / "roc.png")
    fig.savefig(out[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    bins = np.linspace(0, 1, 21)
    ax.hist(probs[labels == 0], bins=bins, alpha=0.6, label=f"real ({int((labels == 0).sum())})")
    ax.hist(probs[labels == 1], bins=bins, alpha=0.6, label=f"fake ({int((labels == 1).sum())})")
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set(xlabel="P(fake)", ylabel="videos", title=f"test scores · {title}")
    ax.title.set_fontsize(8)
    ax.legend()
    fig.tight_layout()
    out.append(folder / "score_hist.png")
    fig.savefig(out[-1])
    plt.close(fig)
    return out


@functools.cache  # the commit does not change while a sweep runs; asked once per trial otherwise
def git_commit_full() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


