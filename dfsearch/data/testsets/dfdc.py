"""DFDC (Dolhansky et al. 2020; ai.meta.com/datasets/dfdc), labels from its own files.

Two published forms, either one per root:

* the training release's parts, ``ROOT/dfdc_train_part_<k>/metadata.json`` (or one part given as ROOT): a JSON
  object ``{"<file>.mp4": {"label": "REAL" | "FAKE", "split": ..., "original": "<file>.mp4" | null}, ...}`` with
  the videos beside it; a fake's group is its ``original``, a real's its own name (so a real and its fakes share one);
* the public test set: ``ROOT/labels.csv`` (header ``filename,label``; label 1 = fake, 0 = real, or FAKE / REAL)
  with the videos beside it (or in ``ROOT/videos/``); each video is its own group (the file gives no source).

An unreadable ``metadata.json`` (truncated download, not JSON) is one note and its part is left out; the others go on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from dfsearch.data.testsets.base import Listing
from dfsearch.errors import DataError

NAME = "dfdc"
META = "metadata.json"
LABELS = "labels.csv"
_LABEL = {"FAKE": True, "REAL": False, "1": True, "0": False}


def _stem(name: str) -> str:
    return Path(name).stem


def _parts(root: Path) -> list[Path]:
    if (root / META).is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / META).is_file())


def _from_metadata(part: Path, out: Listing) -> None:
    meta = part / META
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError(f"expected a JSON object of videos, got {type(doc).__name__}")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        out.notes.append(f"{meta}: unreadable ({str(exc).splitlines()[0][:120]}); the {len(list(part.glob('*.mp4')))} video(s) of {part.name} are left out")
        return
    for name, entry in sorted(doc.items()):
        label = str(entry.get("label", "")).upper() if isinstance(entry, dict) else ""
        if label not in ("FAKE", "REAL"):
            out.notes.append(f"{meta}: {name}: label {label or None!r} is not REAL or FAKE; video skipped")
            continue
        fake = label == "FAKE"
        original = entry.get("original") if fake else None
        out.add(name, part / name, kind=part.name, fake=fake, group=_stem(original) if original else _stem(name))


def _from_labels(root: Path, out: Listing) -> None:
    labels = root / LABELS
    try:
        with open(labels, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{labels}: unreadable ({exc})") from None
    if not rows or not {"filename", "label"} <= set(rows[0]):
        raise DataError(f"{labels}: expected a header 'filename,label' and one row per video")
    folder = root / "videos" if (root / "videos").is_dir() else root
    for n, row in enumerate(rows, 2):
        name, label = (row.get("filename") or "").strip(), str(row.get("label") or "").strip().upper()
        if not name or label not in _LABEL:
            out.notes.append(f"{labels}:{n}: expected '<file>.mp4,<0|1>', got {name!r},{label!r}; row skipped")
            continue
        out.add(name, folder / name, kind="test", fake=_LABEL[label], group=_stem(name))


def index(root: Path, **_) -> Listing:
    out = Listing(NAME, root, [])
    if (root / LABELS).is_file():
        _from_labels(root, out)
    else:
        parts = _parts(root) if root.is_dir() else []
        if not parts:
            raise DataError(f"{root}: not a DFDC root: expected {LABELS} (the public test set) or "
                            f"dfdc_train_part_<k>/{META} folders (the training release)")
        for part in parts:
            _from_metadata(part, out)
    if not out.listed:
        raise DataError(f"{root}: no DFDC label file could be read" + (f" ({out.notes[0]})" if out.notes else ""))
    return out
