"""The file store's index on disk: `.state/monitor/index.arrow` (an Arrow IPC file), so a restarted server shows its
first figures without reading 100,000 job files again.

What is kept: every row of the index, and for each job file the signature it had (inode,
mtime_ns, size) when it was read. On start the store's files are stat-ed (no reads); a file whose
signature matches keeps its saved row, every other place (new, changed, unreadable before, a
foreign entry) is read again as the store's `read_record` reads it, and rows whose file is gone are
dropped. The result is the index a full scan would build (tests/test_index.py checks that). When
more than half the files changed, a full scan is faster than reading them one by one: it is done
instead.

Kept current: the live index saves the snapshot again after it absorbed changes (at most every
`JobIndex.save_seconds`), so a restart re-reads only what changed in the last moments, not
everything since the server started. Nothing is written at shutdown: a crash loses at most
those last moments, which the next start reads again.

Never trusted: a snapshot that is missing, of another format, of another store, unreadable,
inconsistent or larger than the limit is ignored (logged) and the index is built by a full scan.

Why the signatures are safe: they are taken *before* the files are read (the full scan, the
re-reads on start, each re-read of a changed job), so a row is never older than the signature
saved with it; a write in between only makes the next start read that file once more. A file
written in place within the file system's clock tick of being stat-ed could be written again in
that same tick with the same size and keep its signature (git's "racy" entries): a signature whose
mtime is that close to when it was taken is not kept, so that file is read again next time. The
snapshot is written in a background thread, a batch of rows at a time, to a temp file renamed
over the old one (a reader sees the old snapshot or the new, never a part); a store being written
meanwhile is fine.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..store.atomic import TEMP_SUFFIX
from ..store.base import JobStore, Unreadable
from ..store.file_watch import JobFiles, Signature
from ..store.folders import StoreFolders, open_regular
from .frame import COLUMNS, INT_COLUMNS, TEXT_COLUMNS, TIME_COLUMNS, RowStore

log = logging.getLogger("jobs_core.monitor")
FORMAT = 2  # bump when the row schema changes: an older snapshot is then rebuilt
NAME = "index.arrow"  # Arrow IPC, uncompressed: read back in milliseconds (Parquet's decoding took 0.5 s)
MAX_BYTES = 1 << 30
REPEATED = ("project", "render_type", "stage", "error", "worker")
#: a signature whose mtime is this close to the moment it was taken is not kept (see the docstring):
#: local file systems stamp times in ticks of a few milliseconds
RACY_SECONDS = 0.1
#: more changed files than this share of all: a full scan is faster than reading each one
RESCAN_SHARE = 0.5
BATCH_ROWS = 16384  # rows per record batch written: the writer's memory stays small


@dataclass
class Stat:
    """The signature of every place, and when they were taken (ns since the epoch)."""

    signatures: dict[str, Signature]
    taken_ns: int

    def items(self):
        return self.signatures.items()

    def __contains__(self, key: str) -> bool:
        return key in self.signatures

    def __len__(self) -> int:
        return len(self.signatures)


def settled(signatures: dict[str, Signature], taken_ns: int) -> tuple[dict[str, Signature], set[str]]:
    """The signatures worth keeping, and the keys of the racy ones: files modified within
    RACY_SECONDS of being stat-ed (read them again a little later to keep a signature). Places
    that are no files (a project folder that cannot be opened) keep none."""
    racy_from = taken_ns - int(RACY_SECONDS * 1e9)
    kept: dict[str, Signature] = {}
    racy: set[str] = set()
    for key, signature in signatures.items():
        if signature[0] < 0:
            continue
        if signature[1] < racy_from:
            kept[key] = signature
        else:
            racy.add(key)
    return kept, racy


@dataclass
class Loaded:
    rows: RowStore
    unreadable: dict[str, Unreadable]
    records_read: int
    signatures: dict[str, Signature]
    racy: set[str]
    #: whether anything differed from the snapshot (else there is no need to write it again)
    changed: bool


class IndexSnapshot:
    """The snapshot of one file store's index (see the module's docstring)."""

    def __init__(self, store_root: str | os.PathLike, files: JobFiles) -> None:
        self.folders = StoreFolders(store_root)
        self.files = files
        self.identity = os.path.realpath(files.jobs_dir)
        self._writer: threading.Thread | None = None

    @classmethod
    def for_store(cls, store: JobStore) -> IndexSnapshot | None:
        """The snapshot of a file store; None for other backends (a database answers queries itself)."""
        files = getattr(store, "_file_views", None)  # FileJobStore's view of jobs/ (file_watch.JobFiles)
        root = getattr(store, "root", None)
        if not isinstance(files, JobFiles) or root is None:
            return None
        return cls(root, files)

    # -- reading ------------------------------------------------------------------------------
    def load(self) -> Loaded | None:
        """The index from the snapshot, caught up with the files; None when there is no usable one
        (or when so many files changed that a full scan is faster)."""
        # The stat of every file comes before any read (see the module's docstring); the decoding
        # of the snapshot runs beside it, both mostly outside the GIL.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-stat") as pool:
            stat_all = pool.submit(self.stat_all)
            saved = self._read()
            current = stat_all.result()
        if saved is None:
            return None
        keys, arrays, signatures, unreadable_keys = saved
        del saved
        present = set(keys.tolist())
        stale = [key for key, signature in current.items()
                 if key in unreadable_keys or signatures.get(key) != signature or key not in present]
        if len(stale) > RESCAN_SHARE * max(len(current), 1):
            log.info("%d of %d job files changed since the index snapshot: reading them all", len(stale), len(current))
            return None
        rows = RowStore.from_arrays(keys, arrays)
        del keys, arrays, present
        gone = {key for key in rows.position if key not in current}
        from .frame import Columns  # the re-read rows go in the way the watch's changes do

        changed = Columns()
        unreadable: dict[str, Unreadable] = {}
        for record in self.files.read_many(stale):  # as `read_record` reads each, a folder at a time
            if record.doc is not None:
                changed.add(record.key, record.doc)
            else:
                gone.add(record.key)
                if record.problem is not None:
                    unreadable[record.key] = Unreadable(record.location, record.problem)
        differs = bool(stale or gone)
        if differs:
            rows.apply(changed, gone)
        kept, racy = settled(current.signatures, current.taken_ns)
        return Loaded(rows, unreadable, len(stale), kept, racy, differs)

    def stat_all(self) -> Stat:
        """The signature of every place now (before any of them is read)."""
        taken = time.time_ns()
        return Stat(self.files.signatures(), taken)

    def stat_keys(self, keys) -> tuple[dict[str, Signature], set[str]]:
        """The signatures of `keys` now, to keep with what is read of them next, and the racy
        keys (see `settled`); a place that is no file has none (it is read again at the next start)."""
        taken = time.time_ns()
        found: dict[str, Signature] = {}
        for key in keys:
            try:
                info = os.lstat(self.files.location(key))
            except OSError:
                continue
            found[key] = (info.st_ino, info.st_mtime_ns, info.st_size)
        return settled(found, taken)

    def _read(self):
        try:
            with self.folders.open(".state", "monitor") as folder:
                data = _read_whole(folder, NAME, MAX_BYTES)
        except FileNotFoundError:
            log.info("no index snapshot yet: building the index from every job file")
            return None
        except (OSError, ValueError) as error:
            log.warning("the index snapshot cannot be read (%s): building the index from every job file", error)
            return None
        try:
            return self._decode(data)
        except Exception as error:  # noqa: BLE001 - any fault of an untrusted file means: rebuild
            log.warning("the index snapshot is not usable (%s): building the index from every job file", error)
            return None

    def _decode(self, data: bytes):
        import pyarrow as pa

        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        meta = json.loads((table.schema.metadata or {}).get(b"jobs_core", b"{}"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {FORMAT}")
        if meta.get("store") != self.identity:
            raise ValueError(f"made for {meta.get('store')!r}")
        expected = ["key", *COLUMNS, "sig_ino", "sig_mtime", "sig_size"]
        if table.column_names != expected:
            raise ValueError("unexpected columns")
        keys = _text(table.column("key"))
        if any(key is None for key in keys) or len(set(keys)) != len(keys):
            raise ValueError("missing or repeated keys")
        arrays: dict[str, np.ndarray] = {}
        for column in COLUMNS:
            values = table.column(column)
            if column in REPEATED:
                arrays[column] = _shared_text(values)
            elif column in TEXT_COLUMNS:
                arrays[column] = _text(values)
            elif column in TIME_COLUMNS:
                arrays[column] = values.to_numpy().astype(np.int64).view("M8[us]")
            elif column in INT_COLUMNS:
                arrays[column] = values.to_numpy().astype(np.int64)
            elif column == "status":
                codes = values.to_numpy().astype(np.int8)
                if len(codes) and (codes.min() < -1 or codes.max() > 4):
                    raise ValueError("unknown status codes")
                arrays[column] = codes
            else:
                arrays[column] = values.to_numpy().astype(np.float64)
        ino, mtime, size = (table.column(name).to_numpy().astype(np.int64) for name in
                            ("sig_ino", "sig_mtime", "sig_size"))
        signatures = {key: signature for key, signature in
                      zip(keys.tolist(), zip(ino.tolist(), mtime.tolist(), size.tolist(), strict=True), strict=True)
                      if signature[0] >= 0}
        unreadable_keys = set(meta.get("unreadable", []))
        return keys, arrays, signatures, unreadable_keys

    # -- writing ------------------------------------------------------------------------------
    def save_in_background(self, rows: RowStore, signatures: dict[str, Signature], unreadable: set[str]) -> bool:
        """Write the snapshot from a thread (the rows' arrays are never modified in place, and
        `signatures` must be the caller's own copy). False when a write is still under way:
        nothing is started then (the caller tries again later)."""
        if self.busy():
            return False
        self._writer = threading.Thread(target=self._save_quietly, args=(rows.keys, rows.arrays, signatures,
                                                                         unreadable),
                                        name="monitor-snapshot", daemon=True)
        self._writer.start()
        return True

    def busy(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    def wait(self) -> None:
        if self._writer is not None:
            self._writer.join(timeout=60)

    def _save_quietly(self, keys, arrays, signatures, unreadable) -> None:
        try:
            self.save(keys, arrays, signatures, unreadable)
        except Exception as error:  # noqa: BLE001 - a snapshot is an optimisation: the index works without
            log.warning("could not write the index snapshot: %s", error)

    def save(self, keys: np.ndarray, arrays: dict[str, np.ndarray], signatures: dict[str, Signature],
             unreadable: set[str]) -> None:
        """Write the snapshot: a batch of rows at a time into a temp file, then renamed over the old."""
        import pyarrow as pa

        meta = {"format": FORMAT, "store": self.identity, "unreadable": sorted(unreadable)}
        schema = _batch(keys[:0], {column: array[:0] for column, array in arrays.items()}, signatures).schema
        schema = schema.with_metadata({"jobs_core": json.dumps(meta)})
        with self.folders.open(".state", "monitor", create=True) as folder:
            temp = f".{NAME}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=folder.fd)
            try:
                with os.fdopen(fd, "wb", buffering=1 << 20) as out, pa.ipc.new_file(out, schema) as writer:
                    for start in range(0, len(keys), BATCH_ROWS):
                        end = start + BATCH_ROWS
                        writer.write_batch(_batch(keys[start:end], {column: array[start:end] for column, array
                                                                   in arrays.items()}, signatures, schema))
                # not fsynced: a snapshot lost to a power cut is rebuilt, never half-read (rename)
                os.rename(temp, NAME, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
            except BaseException:
                try:
                    os.unlink(temp, dir_fd=folder.fd)
                except OSError:
                    pass
                raise
            finally:
                pa.default_memory_pool().release_unused()  # the batches' memory goes back to the system


def _batch(keys: np.ndarray, arrays: dict[str, np.ndarray], signatures: dict[str, Signature], schema=None):
    """One record batch of the snapshot: the rows of `keys` and the signatures they were read with."""
    import pyarrow as pa

    missing = (-1, 0, 0)  # no signature: the file is read again on the next start
    sigs = np.array([signatures.get(key, missing) for key in keys.tolist()], dtype=np.int64).reshape(len(keys), 3)
    columns = {"key": pa.array(keys, type=pa.string())}
    for column in COLUMNS:
        array = arrays[column]
        if column in TEXT_COLUMNS:
            columns[column] = pa.array(array, type=pa.string())
        elif column in TIME_COLUMNS:
            columns[column] = pa.array(array.view(np.int64))  # NaT kept as its integer
        else:
            columns[column] = pa.array(array)  # NaN stays NaN (not from pandas: no null conversion)
    for number, name in enumerate(("sig_ino", "sig_mtime", "sig_size")):
        columns[name] = pa.array(sigs[:, number])
    if schema is None:
        return pa.RecordBatch.from_pydict(columns)
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=schema)


def _text(values) -> np.ndarray:
    return values.to_numpy(zero_copy_only=False).astype(object, copy=False)


def _shared_text(values) -> np.ndarray:
    """Text that repeats across jobs (a project's name, a stage): one string object per distinct
    value, as the scan's interning gives, instead of one per row."""
    import pyarrow as pa

    encoded = pa.chunked_array(values.chunks, type=values.type).dictionary_encode().combine_chunks()
    distinct = np.array(encoded.dictionary.to_pylist() + [None], dtype=object)
    indices = encoded.indices.fill_null(len(distinct) - 1).to_numpy(zero_copy_only=False)
    return distinct[indices]


def _read_whole(folder, name: str, limit: int) -> bytes:
    """The regular file `name` in one read (its size is known), refusing anything larger than `limit`."""
    fd = open_regular(folder, name)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ValueError(f"larger than {limit} bytes")
        data = os.read(fd, size)
        while len(data) < size and (chunk := os.read(fd, size - len(data))):
            data += chunk
        return data
    finally:
        os.close(fd)
