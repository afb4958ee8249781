"""The official FaceForensics++ train/val/test split files (lists of [target, source] id pairs).

A pair ``[a, b]`` names the manipulated videos ``a_b`` and ``b_a`` of every method and the originals ``a`` and
``b``.  The official files ship in ``dfsearch/data/splits/`` (MIT licence); a tree may carry its own
``ROOT/splits/{train,val,test}.json`` (the synthetic stand-in does), which then wins.
"""

from __future__ import annotations

import json
from pathlib import Path

from dfsearch.errors import DataError

SPLITS = ("train", "val", "test")
PACKAGE_SPLITS = Path(__file__).resolve().parent / "splits"

Pair = tuple[str, str]


def split_dir_for(root: str | Path | None) -> Path:
    """The folder whose split files apply to ``root``: ``ROOT/splits`` if it has them, else the official ones."""
    if root is not None:
        own = Path(root) / "splits"
        if all((own / f"{s}.json").is_file() for s in SPLITS):
            return own
    return PACKAGE_SPLITS


def load_split_file(path: Path) -> list[Pair]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON split file ({exc})") from None
    if not isinstance(data, list) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in data
    ):
        raise DataError(f"{path}: expected a JSON list of [target, source] id pairs such as [[\"071\", \"054\"], ...]")
    return [(a, b) for a, b in data]


def load_splits(root: str | Path | None = None) -> dict[str, list[Pair]]:
    """``{"train": [(a, b), ...], "val": [...], "test": [...]}``; checks that no identity is in two splits."""
    folder = split_dir_for(root)
    splits = {s: load_split_file(folder / f"{s}.json") for s in SPLITS}
    check_disjoint(splits, folder)
    return splits


def identities(pairs: list[Pair]) -> set[str]:
    return {i for pair in pairs for i in pair}


def check_disjoint(splits: dict[str, list[Pair]], where: Path | str = "split files") -> None:
    seen: dict[str, str] = {}
    for split, pairs in splits.items():
        for ident in identities(pairs):
            if ident in seen and seen[ident] != split:
                raise DataError(f"{where}: identity {ident!r} is in both the {seen[ident]} and the {split} split")
            seen[ident] = split


def split_of_identity(splits: dict[str, list[Pair]]) -> dict[str, str]:
    return {ident: split for split, pairs in splits.items() for ident in identities(pairs)}
