"""Where a sweep keeps its Tune state and Train checkpoints: a folder or a URI every node can reach.

    --storage /mnt/nfs/sweeps            a folder every node mounts at the same path (NFS, Lustre, ...)
    --storage s3://bucket/sweeps         any filesystem pyarrow knows: s3://, gs://, abfs://, hdfs://
    (default)                            the sweep folder WORK_DIR/NAME, on the driver's disk

Ray Train workers write each checkpoint straight to the storage from whatever node they run on, and a
trial that continues on another node (a lost node, a resumed sweep) reads it back from there.  A folder
that only the driver's machine has would silently scatter checkpoints over the nodes' own disks, so on a
cluster of several nodes :func:`dfsearch.tune.cluster.check_shared` proves that every node sees what the driver wrote, before
any trial starts.  The sweep record (sweep.json) and the default MLflow store stay in WORK_DIR/NAME.

This module imports no Ray: the report and predict read checkpoints through it too.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dfsearch.errors import DfsearchError

PROBE_PREFIX = ".dfsearch-probe-"  # removed again right after the check
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")  # what pyarrow.fs.FileSystem.from_uri opens


def is_uri(location: str) -> bool:
    return "://" in location


def resolve(location: str | None, default: Path) -> str:
    """The storage as Ray takes it: an absolute folder, or a URI (``file://`` becomes a plain folder)."""
    if not location:
        return str(Path(default).expanduser().resolve())
    if location.startswith("file://"):
        location = urlsplit(location).path
    if not is_uri(location):
        return str(Path(location).expanduser().resolve())
    scheme = urlsplit(location).scheme
    if scheme not in SCHEMES:  # opening it may need the network (a bucket's region): that waits for check_writable
        raise DfsearchError(f"--storage {location}: unknown scheme {scheme}://; use a folder or one of " + ", ".join(f"{s}://" for s in SCHEMES))
    return location.rstrip("/")


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for folders and URIs alike (a URI's query, e.g. ``?endpoint_override=``, stays last)."""
    if not is_uri(location):
        return str(Path(location, *parts))
    u = urlsplit(location)
    return urlunsplit(u._replace(path="/".join([u.path.rstrip("/"), *parts])))


def filesystem(location: str):
    """``(pyarrow filesystem, path inside it)`` for a folder or a URI."""
    import pyarrow.fs

    if not is_uri(location):
        return pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())
    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except Exception as exc:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError per scheme
        raise DfsearchError(f"--storage {location}: not a storage URI this machine can open ({first_line(exc)}); "
                            "use a folder or s3://, gs://, abfs://, hdfs://") from None


def exists(location: str) -> bool:
    import pyarrow.fs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_text(location: str) -> str:
    """The text of one file; ``OSError`` (FileNotFoundError) when it is not there."""
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.readall().decode("utf-8")


def write_text(location: str, text: str) -> None:
    fs, path = filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode("utf-8"))


def subfolders(location: str, prefix: str = "") -> list[str]:
    """The names of the folders directly inside ``location`` that start with ``prefix``, sorted (none when it is absent)."""
    import pyarrow.fs

    fs, path = filesystem(location)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(prefix))


def move(source: str, target: str) -> None:
    """Rename ``source`` to ``target`` (on the same storage), replacing ``target``."""
    fs, path = filesystem(source)
    fs.move(path, filesystem(target)[1])


def delete(location: str) -> None:
    fs, path = filesystem(location)
    try:
        fs.delete_file(path)
    except OSError:
        pass


def check_writable(location: str) -> None:
    """Write and remove a small file, so a wrong bucket or missing credentials fail before anything starts."""
    probe = join(location, f"{PROBE_PREFIX}{uuid.uuid4().hex[:8]}")
    try:
        write_text(probe, "dfsearch")
        read_text(probe)
    except OSError as exc:
        raise DfsearchError(f"--storage {location}: cannot write there ({first_line(exc)})") from None
    finally:
        delete(probe)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
