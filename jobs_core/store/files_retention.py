"""The file store's part of retention: removing jobs whole, its size, the record of the last prune.

    {root}/.state/pruning/{id}.json     a removal in progress: the jobs and concepts of one batch
    {root}/.state/last-prune.json       when a worker last took its turn to prune
    {root}/.state/prune-locks/NN.lock   held by a removal while it works (flock: a kill frees it)

A batch is removed in this order: (1) its intent file, durably; (2) under each job's lock, the job
re-read and checked, and its job file unlinked (the job is gone: one unlink); (3) the job folders
fsynced; (4) renders, event logs, Idempotency-Key markers and webhook deliveries of the jobs now
gone, and the batch's concepts no kept job uses; (5) the intent file. A kill -9 anywhere leaves
each job whole (its file is there, with everything) or gone (no file: nothing reads the rest).
What a killed removal left is finished from its intent file by the next removal or by `repair`,
never by a removal that still runs (its lock is held).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Collection
from contextlib import ExitStack
from datetime import datetime, timedelta

from ..errors import JobNotFound, TransitionConflict, UnreadableJob
from ..ids import ID_PATTERN, new_id
from ..models import Job
from .atomic import StripedLocks, atomic_write, fsync_dir, is_temp_name, unlink_quietly
from .base import RemovableJob, Removal, Removed, StoreSize
from .folders import Folder, StoreFolders, UnsafeEntry, read_regular

PRUNING = (".state", "pruning")
LAST_PRUNE = "last-prune.json"


class FileRetention:
    """Mixed into FileJobStore (which provides folders, locks, outbox and the job reads)."""

    def _prune_locks(self) -> StripedLocks:
        # Their own lock files: a removal holds one while it takes job locks (two flocks on one
        # file from one process would deadlock).
        if "_prune_lock_files" not in self.__dict__:
            with self.folders.open(*PRUNING, create=True):
                pass
            self._prune_lock_files = StripedLocks(self.folders, (".state", "prune-locks"), stripes=16)
        return self._prune_lock_files

    def remove_jobs(self, jobs: list[RemovableJob], check: Callable[[Job], None],
                    concepts: Collection[tuple[str, str]] = (), *, dry_run: bool = False) -> Removal:
        if dry_run:
            return self._measure_removal(jobs, check, concepts)
        removal = self.finish_interrupted_removals()
        if not jobs:
            return removal
        name = f"{new_id('prune')}.json"
        locks = self._prune_locks()
        with locks.hold(name), OpenFolders(self.folders) as opened:
            self._write_intent(name, jobs, concepts)
            gone, kept = [], set()
            for target in jobs:
                removed = self._unlink_job_file(opened, target, check)
                if removed is None:
                    kept.add((target.project_id, target.concept_id))
                else:
                    gone.append(target)
                    removal.jobs.append(removed)
            for project in {target.project_id for target in gone}:
                folder = opened.get(("jobs", project))
                if folder is not None:
                    fsync_dir(folder)  # gone for good before anything else of them goes
            self._remove_leftovers(opened, gone)  # their bytes were counted before the job files went
            removal.other_bytes += self.outbox.drop({target.job_id for target in gone})
            self._remove_concepts(set(concepts) - kept, removal)
            with self.folders.open(*PRUNING) as folder:
                unlink_quietly(folder, name)
        return removal

    def _write_intent(self, name: str, jobs: list[RemovableJob], concepts: Collection[tuple[str, str]]) -> None:
        document = {"jobs": [[t.project_id, t.job_id, t.concept_id, t.idempotency_key] for t in jobs],
                    "concepts": sorted(map(list, concepts))}
        with self.folders.open(*PRUNING, create=True) as folder:
            atomic_write(folder, name, json.dumps(document).encode())

    def _unlink_job_file(self, opened: OpenFolders, target: RemovableJob,
                         check: Callable[[Job], None]) -> Removed | None:
        """Step 2: check the job as it is now and unlink its file; what it took, or None if kept."""
        with self.locks.hold(target.job_id):
            try:
                job = self._get(target.job_id, target.project_id)
                check(job)
            except (JobNotFound, UnreadableJob, TransitionConflict):
                return None
            size = self._bytes_of(opened, target)
            had_render = self._size(opened, ("renders", target.project_id), f"{target.job_id}.png") > 0
            self._unmark(self._markers(job))
            unlink_quietly(opened.get(("jobs", target.project_id)), f"{target.job_id}.json")
        self._project_of.forget(target.job_id)
        return Removed(target.job_id, target.project_id, job.status, size, had_render)

    def _files_of(self, target: RemovableJob) -> list[tuple[tuple[str, ...], str]]:
        """Where a job's files are, but its job file: (folder parts, name)."""
        files = [(("renders", target.project_id), f"{target.job_id}.png"),
                 (("events", target.project_id), f"{target.job_id}.jsonl")]
        if target.idempotency_key is not None:
            digest = hashlib.sha256(target.idempotency_key.encode()).hexdigest()
            files.append(((".state", "idempotency", target.project_id), digest))
        return files

    def _bytes_of(self, opened: OpenFolders, target: RemovableJob) -> int:
        parts = [(("jobs", target.project_id), f"{target.job_id}.json"), *self._files_of(target)]
        return sum(self._size(opened, folder_parts, name) for folder_parts, name in parts)

    @staticmethod
    def _size(opened: OpenFolders, parts: tuple[str, ...], name: str) -> int:
        folder = opened.get(parts)
        try:
            return 0 if folder is None else os.stat(name, dir_fd=folder.fd, follow_symlinks=False).st_size
        except OSError:
            return 0

    def _remove_leftovers(self, opened: OpenFolders, gone: list[RemovableJob]) -> int:
        """Step 4: the other files of jobs whose file is gone; the bytes they took. (Their webhook
        deliveries: `outbox.drop`, once for a batch, since it lists the outbox.)"""
        freed = 0
        for target in gone:
            for parts, name in self._files_of(target):
                folder, size = opened.get(parts), self._size(opened, parts, name)
                if folder is None:
                    continue  # no such folder: nothing of the job there
                try:
                    unlink_quietly(folder, name)
                except OSError:
                    continue  # not a file of ours (a folder someone made there): left alone
                freed += size
        return freed

    def _remove_concepts(self, concepts: set[tuple[str, str]], removal: Removal, dry_run: bool = False) -> None:
        with OpenFolders(self.folders) as opened:
            for project_id, concept_id in sorted(concepts):
                if not (ID_PATTERN.fullmatch(project_id) and ID_PATTERN.fullmatch(concept_id)):
                    continue
                size = self._size(opened, ("concepts", project_id), f"{concept_id}.json")
                if not size:
                    continue  # none was saved (a job made from another's concept), or removed already
                if not dry_run:
                    unlink_quietly(opened.get(("concepts", project_id)), f"{concept_id}.json")
                removal.concepts += 1
                removal.other_bytes += size

    def _measure_removal(self, jobs: list[RemovableJob], check: Callable[[Job], None],
                         concepts: Collection[tuple[str, str]]) -> Removal:
        removal, kept = Removal(), set()
        with OpenFolders(self.folders) as opened:
            for target in jobs:
                try:
                    job = self._get(target.job_id, target.project_id)
                    check(job)
                except (JobNotFound, UnreadableJob, TransitionConflict):
                    kept.add((target.project_id, target.concept_id))
                    continue
                had_render = self._size(opened, ("renders", target.project_id), f"{target.job_id}.png") > 0
                removal.jobs.append(Removed(target.job_id, target.project_id, job.status,
                                            self._bytes_of(opened, target), had_render))
        removal.other_bytes += self.outbox.drop({removed.job_id for removed in removal.jobs}, dry_run=True)
        self._remove_concepts(set(concepts) - kept, removal, dry_run=True)
        return removal

    def finish_interrupted_removals(self) -> Removal:
        """Finish every removal a crash interrupted (its intent file is there, its lock free):
        remove what is left of its jobs whose file is gone, and its concepts no remaining job of
        it uses. A job whose file is still there is whole and stays (the next prune decides)."""
        removal = Removal()
        locks = self._prune_locks()
        with self.folders.open(*PRUNING) as folder:
            names = sorted(name for name in os.listdir(folder.fd) if name.endswith(".json") and not is_temp_name(name))
        for name in names:
            held = locks.try_hold(name)
            if held is None:
                continue  # a removal at work in another process
            try:
                self._finish_intent(name, removal)
            finally:
                locks.release(held)
        return removal

    def _finish_intent(self, name: str, removal: Removal) -> None:
        with self.folders.open(*PRUNING) as folder:
            try:
                document = json.loads(read_regular(folder, name, 4 * 1024 * 1024))
                jobs = [RemovableJob(*map(_optional_text, row)) for row in document["jobs"]]
                concepts = {(str(p), str(c)) for p, c in document["concepts"]}
            except FileNotFoundError:
                return  # finished by another process meanwhile
            except (OSError, ValueError, KeyError, TypeError):
                unlink_quietly(folder, name)  # not ours, or torn before its rename: nothing was removed
                return
        jobs = [t for t in jobs if ID_PATTERN.fullmatch(t.project_id or "") and ID_PATTERN.fullmatch(t.job_id or "")]
        gone = [t for t in jobs if not self._job_file_there(t)]
        kept = {(t.project_id, t.concept_id) for t in jobs if t not in gone}
        with OpenFolders(self.folders) as opened:
            removal.other_bytes += self._remove_leftovers(opened, gone)
        removal.other_bytes += self.outbox.drop({t.job_id for t in gone})
        self._remove_concepts(concepts - kept, removal)
        with self.folders.open(*PRUNING) as folder:
            unlink_quietly(folder, name)

    def _job_file_there(self, target: RemovableJob) -> bool:
        try:
            with self._open("jobs", target.project_id) as folder:
                os.stat(f"{target.job_id}.json", dir_fd=folder.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: keep it
        return True

    # -- the size, for the monitor ---------------------------------------------------------------
    def store_size(self) -> StoreSize:
        """Counts and bytes from one listing and one stat per file (lstat: no link is followed)."""
        jobs, job_bytes = self._count_files("jobs", ".json")
        renders, render_bytes = self._count_files("renders", ".png")
        _, event_bytes = self._count_files("events", ".jsonl")
        _, concept_bytes = self._count_files("concepts", ".json")
        return StoreSize(jobs, renders, job_bytes + render_bytes + event_bytes + concept_bytes + self.outbox.size())

    def _count_files(self, kind: str, suffix: str) -> tuple[int, int]:
        count = total = 0
        top = self.root / kind
        with os.scandir(top) as projects:
            for project in projects:
                if not (project.is_dir(follow_symlinks=False) and ID_PATTERN.fullmatch(project.name)):
                    continue
                with os.scandir(project.path) as entries:
                    for entry in entries:
                        if entry.name.endswith(suffix) and entry.is_file(follow_symlinks=False):
                            try:
                                total += entry.stat(follow_symlinks=False).st_size
                            except FileNotFoundError:
                                continue  # removed meanwhile
                            count += 1
        return count, total

    # -- whose turn it is to prune -------------------------------------------------------------------
    def claim_prune_turn(self, now: datetime, every: timedelta) -> bool:
        with self._prune_locks().hold(LAST_PRUNE):
            last = self.last_pruned_at()
            if last is not None and now - last < every:
                return False
            with self.folders.open(".state") as folder:
                atomic_write(folder, LAST_PRUNE, json.dumps({"lastPrunedAt": now.isoformat()}).encode())
            return True

    def last_pruned_at(self) -> datetime | None:
        try:
            with self.folders.open(".state") as folder:
                return datetime.fromisoformat(json.loads(read_regular(folder, LAST_PRUNE, 4096))["lastPrunedAt"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # never pruned, or not ours: a prune rewrites it


class OpenFolders:
    """The folders one batch touches, each opened once: walking the path again for every file
    would cost more than the file's own unlink."""

    def __init__(self, folders: StoreFolders) -> None:
        self.folders = folders
        self._stack = ExitStack()
        self._opened: dict[tuple[str, ...], Folder | None] = {}

    def get(self, parts: tuple[str, ...]) -> Folder | None:
        """The open folder, or None when it does not exist (or is not a folder of ours)."""
        if parts not in self._opened:
            try:
                self._opened[parts] = self._stack.enter_context(self.folders.open(*parts))
            except (FileNotFoundError, NotADirectoryError, UnsafeEntry):
                self._opened[parts] = None
        return self._opened[parts]

    def __enter__(self) -> OpenFolders:
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)
