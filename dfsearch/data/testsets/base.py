"""What every test-only dataset adapter returns: the videos its own label files list, with label and group."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dfsearch.data.layout import FAKE, REAL, VideoEntry


@dataclass(frozen=True)
class TestVideo(VideoEntry):
    """A video of a test-only set.  ``video_id`` is ``"<folder>/<stem>"`` (unique within the set, and the path of
    its clip-cache entry); the label comes from the set's label file, never from the folder name alone."""

    fake: bool = False
    group: str = ""  # the identity / source video the video belongs to (real and fakes of one person share it)

    @property
    def label(self) -> int:  # type: ignore[override]
        return FAKE if self.fake else REAL

    @property
    def identities(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.group,)


@dataclass
class Listing:
    """An adapter's answer: the listed videos present on disk, and what was odd (one line each)."""

    name: str  # the set (celebdf, dfdc, ...)
    root: Path
    videos: list[TestVideo]
    missing: list[str] = field(default_factory=list)  # "video (path)" named by a label file but not on disk
    notes: list[str] = field(default_factory=list)  # malformed lines, unreadable label files, ...
    listed: int = 0  # videos the label files name (the expected count)

    def add(self, listed_as: str, path: Path, *, kind: str, fake: bool, group: str) -> None:
        """One video a label file names: counted as expected, kept when it is on disk, else recorded as missing."""
        self.listed += 1
        if path.is_file():
            self.videos.append(video(kind, path, fake=fake, group=group))
        else:
            self.missing.append(f"{listed_as} ({path})")

    def report(self) -> list[str]:
        lines = list(self.notes)
        if self.missing:
            shown = ", ".join(self.missing[:3]) + (f" and {len(self.missing) - 3} more" if len(self.missing) > 3 else "")
            lines.append(f"{self.name}: {len(self.missing)} video(s) named by the label files are missing on disk and are left out: {shown}")
        return lines

    def counts(self) -> dict[str, int]:
        fake = sum(v.fake for v in self.videos)
        return {"real": len(self.videos) - fake, "fake": fake}


def video(kind: str, path: Path, *, fake: bool, group: str) -> TestVideo:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return TestVideo(f"{kind}/{stem}", kind, stem, "test", path, fake=fake, group=group)
