"""The file store's index on disk: `.state/monitor/index.arrow` (an Arrow IPC file), so a restarted server shows its
first figures without reading 100,000 job files again.

What is kept: every row of the index, and for each job file the signature it had (inode,
mtime_ns, size) when it was read. On start the store's files are stat-ed (no reads); a file whose
signature matches keeps its saved row, every other place (new, changed, unreadable before, a
foreign entry) is read again through the store's `read_record`, and rows whose file is gone are
dropped. The result is the index a full scan would build (tests/test_index.py checks that).

Never trusted: a snapshot that is missing, of another format, of another store, unreadable,
inconsistent or larger than the limit is ignored (logged) and the index is built by a full scan.

Why the signatures are safe: they are taken *before* the files are read (the full scan, or the
re-reads on start), so a row is never older than the signature saved with it; a write in between
only makes the next start read that file once more. The snapshot is written after each build, in
a background thread, atomically (temp file and rename); a store being written meanwhile is fine.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..store.atomic import atomic_write
from ..store.base import JobRecord, JobStore, Unreadable
from ..store.file_watch import JobFiles, Signature
from ..store.folders import StoreFolders, open_regular
from .frame import COLUMNS, INT_COLUMNS, TEXT_COLUMNS, TIME_COLUMNS, RowStore

log = logging.getLogger("jobs_core.monitor")
FORMAT = 1  # bump when the row schema changes: an older snapshot is then rebuilt
NAME = "index.arrow"  # Arrow IPC, uncompressed: read back in milliseconds (Parquet's decoding took 0.5 s)
MAX_BYTES = 1 << 30
REPEATED = ("project", "render_type", "stage", "error", "worker")


@dataclass
class Loaded:
    rows: RowStore
    unreadable: dict[str, Unreadable]
    records_read: int
    signatures: dict[str, Signature]
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
    def load(self, read_record) -> Loaded | None:
        """The index from the snapshot, caught up with the files; None when there is no usable one."""
        # The stat of every file (before any read: see the module's docstring) runs beside the
        # decoding of the snapshot: both spend their time outside the GIL.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-stat") as pool:
            stat_all = pool.submit(self.files.signatures)
            saved = self._read()
            current = stat_all.result()
        if saved is None:
            return None
        keys, arrays, signatures, unreadable_keys = saved
        del saved
        rows = RowStore.from_arrays(keys, arrays)
        stale = [key for key, signature in current.items()
                 if key in unreadable_keys or signatures.get(key) != signature or key not in rows.position]
        gone = {key for key in rows.position if key not in current}
        from .frame import Columns  # the re-read rows go in the way the watch's changes do

        changed = Columns()
        unreadable: dict[str, Unreadable] = {}
        for key in stale:
            record: JobRecord = read_record(key)
            if record.doc is not None:
                changed.add(record.key, record.doc)
            else:
                gone.add(key)
                if record.problem is not None:
                    unreadable[key] = Unreadable(record.location, record.problem)
        differs = bool(stale or gone)
        if differs:
            rows.apply(changed, gone)
        return Loaded(rows, unreadable, len(stale), current, differs)

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
    def save_in_background(self, rows: RowStore, signatures: dict[str, Signature], unreadable: set[str]) -> None:
        """Write the snapshot from a thread (the rows' arrays are never modified in place)."""
        self.wait()
        self._writer = threading.Thread(target=self._save_quietly, args=(rows.keys, rows.arrays, signatures,
                                                                         unreadable),
                                        name="monitor-snapshot", daemon=True)
        self._writer.start()

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
        import pyarrow as pa

        missing = (-1, 0, 0)  # no signature: the file is read again on the next start
        sigs = np.array([signatures.get(key, missing) for key in keys], dtype=np.int64).reshape(len(keys), 3)
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
        meta = {"format": FORMAT, "store": self.identity, "unreadable": sorted(unreadable)}
        table = pa.table(columns).replace_schema_metadata({"jobs_core": json.dumps(meta)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        with self.folders.open(".state", "monitor", create=True) as folder:
            # not fsynced: a snapshot lost to a power cut is rebuilt, never half-read (rename)
            atomic_write(folder, NAME, sink.getvalue().to_pybytes(), durable=False)


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
