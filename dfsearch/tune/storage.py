"""Where a sweep keeps its Tune state and Train checkpoints: a folder or a URI every node can reach.

    --storage /mnt/nfs/sweeps            a folder every node mounts at the same path (NFS, Lustre, ...)
    --storage s3://bucket/sweeps         any filesystem pyarrow knows: s3://, gs://, abfs://, hdfs://
    (default)                            the sweep folder WORK_DIR/NAME, on the driver's disk

Ray Train workers write each checkpoint straight to the storage from whatever node they run on, and a
trial that continues on another node (a lost node, a resumed sweep) reads it back from there.  A folder
that only the driver's machine has would silently scatter checkpoints over the nodes' own disks, so on a
cluster of several nodes :func:`check_shared` proves that every node sees what the driver wrote, before
any trial starts.  The sweep record (sweep.json) and the default MLflow store stay in WORK_DIR/NAME.
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
        raise DfsearchError(f"--storage {location}: not a storage URI this machine can open ({_first_line(exc)}); "
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
        raise DfsearchError(f"--storage {location}: cannot write there ({_first_line(exc)})") from None
    finally:
        delete(probe)


def _probe(location: str, token: str) -> str | None:
    """Runs on one node: None when it reads back what the driver wrote at ``location``, else why not."""
    try:
        found = read_text(location)
    except FileNotFoundError:
        return "the file is not there"
    except Exception as exc:  # credentials, network, permissions: any reason the node cannot read it
        return _first_line(exc)
    return None if found == token else "it holds another file of that name"


def check_shared(location: str, timeout_s: float = 120.0) -> int:
    """The driver can write to the storage, and, on a cluster of several nodes, make sure every node sees the storage as the driver does: the driver
    writes a file there and a task pinned to each node reads it back.  Returns the number of nodes checked;
    raises :class:`DfsearchError` naming the nodes that cannot see it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check_writable(location)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return len(nodes)
    token = uuid.uuid4().hex
    probe = join(location, f"{PROBE_PREFIX}{token}")
    write_text(probe, token)
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(_probe)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(probe, token) for n in nodes]
        try:
            answers = ray.get(refs, timeout=timeout_s)
        except Exception as exc:  # GetTimeoutError, a node lost meanwhile, ...
            raise DfsearchError(f"--storage {location}: could not ask every node whether it sees the storage ({_first_line(exc)})") from None
    finally:
        delete(probe)
    blind = [f"{n.get('NodeManagerAddress')} (node {n['NodeID'][:8]}: {why})" for n, why in zip(nodes, answers) if why]
    if blind:
        kind = "URI" if is_uri(location) else "folder"
        raise DfsearchError(
            f"storage {location} is not shared: {len(blind)} of {len(nodes)} node(s) cannot read the file the driver wrote there: "
            + "; ".join(blind)
            + f". Every node writes its trials' checkpoints to this {kind}, and a trial that moves to another node reads them back, "
            "so pass --storage (or DFSEARCH_STORAGE) a folder that every node mounts at the same path, or a URI such as s3://bucket/sweeps"
        )
    return len(nodes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
