"""The paper's three protocols as one config value, and the class weights of the weighted cross-entropy.

- ``all``: the four methods vs real, in every split (fakes outnumber reals 4:1, hence the weighted loss);
- ``single:M``: method M vs real, in every split;
- ``cross:M``: train and val on the other three methods + real, test on M + real.
"""

from __future__ import annotations

import torch

from dfsearch.config import METHODS, parse_protocol
from dfsearch.data.layout import ORIGINAL, VideoEntry
from dfsearch.data.splits import SPLITS, Pair, identities
from dfsearch.errors import DataError


def protocol_methods(protocol: str) -> dict[str, tuple[str, ...]]:
    """The manipulation methods each split uses, e.g. ``cross:NT`` -> train/val: DF, F2F, FS; test: NT."""
    kind, method = parse_protocol(protocol)
    if kind == "all":
        return {s: METHODS for s in SPLITS}
    if kind == "single":
        return {s: (method,) for s in SPLITS}
    others = tuple(m for m in METHODS if m != method)
    return {"train": others, "val": others, "test": (method,)}


def expected_counts(splits: dict[str, list[Pair]], protocol: str) -> dict[str, int]:
    """How many videos each split of ``protocol`` has by its split files: every real video of the split's
    identities plus, per method, the two fakes of each pair (FF++ test: 140 real + 140 per method)."""
    methods = protocol_methods(protocol)
    return {s: len(identities(splits[s])) + 2 * len(splits[s]) * len(methods[s]) for s in SPLITS}


def protocol_videos(videos: list[VideoEntry], protocol: str) -> dict[str, list[VideoEntry]]:
    """Split ``videos`` (a :class:`TreeIndex`'s) into the train / val / test lists of ``protocol``."""
    methods = protocol_methods(protocol)
    out: dict[str, list[VideoEntry]] = {}
    for split in SPLITS:
        keep = [v for v in videos if v.split == split and (v.method == ORIGINAL or v.method in methods[split])]
        labels = {v.label for v in keep}
        if labels != {0, 1}:
            what = "real" if 0 not in labels else f"fake ({', '.join(methods[split])})"
            raise DataError(f"protocol {protocol!r}: the {split} split has no {what} videos in the prepared data")
        out[split] = keep
    return out


def class_weights(videos: list[VideoEntry], weighted: bool = True) -> torch.Tensor:
    """Inverse class frequency over ``videos`` (label 0 real, 1 fake), normalised to mean 1; ones if not weighted."""
    if not weighted:
        return torch.ones(2)
    counts = torch.tensor([sum(v.label == c for v in videos) for c in (0, 1)], dtype=torch.float64)
    if (counts == 0).any():
        raise DataError("class weights: the training set lacks one of the classes (real / fake)")
    w = 1.0 / counts
    return (w / w.mean()).float()


def cap_videos(videos: list[VideoEntry], max_videos: int) -> list[VideoEntry]:
    """At most ``max_videos`` videos (0 = all), half real and half fake where possible, chosen deterministically."""
    if max_videos <= 0 or len(videos) <= max_videos:
        return list(videos)
    real = sorted((v for v in videos if v.label == 0), key=lambda v: v.video_id)
    fake = sorted((v for v in videos if v.label == 1), key=lambda v: v.video_id)
    k = max(max_videos, 2)
    n_real = min(len(real), max(1, k // 2))
    n_fake = min(len(fake), k - n_real)
    n_real = min(len(real), k - n_fake)
    # Spread the fakes over methods: interleave by method rather than taking the first method's.
    by_method: dict[str, list[VideoEntry]] = {}
    for v in fake:
        by_method.setdefault(v.method, []).append(v)
    interleaved = [v for group in zip_longest_lists(list(by_method.values())) for v in group]
    chosen = {v.video_id for v in real[:n_real] + interleaved[:n_fake]}
    return [v for v in videos if v.video_id in chosen]


def zip_longest_lists(groups: list[list[VideoEntry]]) -> list[list[VideoEntry]]:
    longest = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(longest)]
