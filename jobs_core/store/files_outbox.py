"""The file store's webhook outbox: one file per delivery, its state in its name.

    {root}/.state/outbox/ready/{nextAtMs}.{order}.{key}.{deliveryId}.{attempts}     waiting
    {root}/.state/outbox/sending/{leaseUntilMs}.{order}.{key}.{deliveryId}.{attempts} claimed
    {root}/.state/webhook-secret                                                     the signing key

A file's content (the delivery as JSON) is written once and never changed; what changes (when it
is due, how many attempts were made, who holds it) is its name and folder, changed by one rename:
of two senders renaming one name, exactly one succeeds. So a claim is a rename into sending/ (the
lease in the name), a retry a rename back into ready/ (the next time and attempt count in the
name), a takeover of an expired claim a rename within sending/, and a delivery sent is unlinked.
A file is written with the job change that makes it due, before the job file (durably when the
change is), so a recorded change never lacks its deliveries. Renames are not fsynced: after a power
loss a delivery may come back and be sent again, with the same webhook-id (at least once).

Entries are read as every file of the store is: without following links, regular files only,
under a size limit (folders.py); a name that is not ours is left alone, an unreadable entry removed.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import datetime, timedelta
from typing import NamedTuple

from ..errors import StoreWriteError
from ..ids import ID_PATTERN
from ..webhooks import Delivery, from_ms, utc_ms
from .atomic import describe_os_error, unlink_quietly, write_new
from .folders import Folder, MiB, StoreFolders, UnsafeEntry, read_regular

log = logging.getLogger("jobs_core.store")
READY, SENDING = (".state", "outbox", "ready"), (".state", "outbox", "sending")
SECRET_NAME = "webhook-secret"
MAX_DELIVERY_BYTES = 2 * MiB  # a job document (at most 1 MiB) and the envelope


class Entry(NamedTuple):
    time_ms: int  # ready: when it is due; sending: when its lease ends
    order: int
    key: str
    delivery_id: str
    attempts: int

    @property
    def name(self) -> str:
        return f"{self.time_ms:013d}.{self.order:019d}.{self.key}.{self.delivery_id}.{self.attempts}"

    @classmethod
    def parse(cls, name: str) -> Entry | None:
        parts = name.split(".")
        if len(parts) != 5 or not (parts[0].isdigit() and parts[1].isdigit() and parts[4].isdigit()):
            return None
        if not (ID_PATTERN.fullmatch(parts[2]) and ID_PATTERN.fullmatch(parts[3])):
            return None
        return cls(int(parts[0]), int(parts[1]), parts[2], parts[3], int(parts[4]))


class FileOutbox:
    def __init__(self, folders: StoreFolders) -> None:
        self.folders = folders
        for parts in (READY, SENDING):
            with folders.open(*parts, create=True):
                pass

    # -- writes with a job change ------------------------------------------------------------------
    def stage(self, deliveries: tuple[Delivery, ...] | list[Delivery], durable: bool = True) -> list[str]:
        """Write deliveries into ready/; the names written (to `unstage` if the job write fails)."""
        names: list[str] = []
        try:
            with self.folders.open(*READY) as folder:
                for delivery in deliveries:
                    entry = Entry(utc_ms(delivery.next_at), delivery.order, delivery.key, delivery.id,
                                  delivery.attempts)
                    try:
                        write_new(folder, entry.name, replace(delivery, claim=None).to_json().encode(),
                                  durable=durable)
                    except FileExistsError:
                        continue  # the same delivery, already queued
                    names.append(entry.name)
        except (OSError, StoreWriteError) as error:
            self.unstage(names)
            reason = describe_os_error(error) if isinstance(error, OSError) else str(error)
            raise StoreWriteError(f"Could not queue a webhook delivery: {reason}. Nothing was changed.") from error
        return names

    def unstage(self, names: list[str]) -> None:
        with self.folders.open(*READY) as folder:
            for name in names:
                unlink_quietly(folder, name)

    # -- senders ---------------------------------------------------------------------------------------
    def _entries(self, folder: Folder) -> list[Entry]:
        return [entry for name in os.listdir(folder.fd) if (entry := Entry.parse(name)) is not None]

    def claim(self, now: datetime, lease_seconds: float) -> Delivery | None:
        now_ms = utc_ms(now)
        lease_ms = utc_ms(now + timedelta(seconds=lease_seconds))
        with self.folders.open(*READY) as ready, self.folders.open(*SENDING) as sending:
            waiting, claimed = self._entries(ready), self._entries(sending)
            first: dict[str, int] = {}
            for entry in waiting + claimed:
                first[entry.key] = min(first.get(entry.key, entry.order), entry.order)
            # due waiting entries, and claims whose sender let the lease run out (it died)
            candidates = sorted((entry.time_ms, index, entry, folder) for index, (entry, folder) in enumerate(
                [(entry, ready) for entry in waiting] + [(entry, sending) for entry in claimed])
                if entry.time_ms <= now_ms and entry.order == first[entry.key])
            for _, _, entry, origin in candidates:
                target = entry._replace(time_ms=lease_ms)
                try:
                    os.rename(entry.name, target.name, src_dir_fd=origin.fd, dst_dir_fd=sending.fd)
                except FileNotFoundError:
                    continue  # another sender was faster
                delivery = self._read(sending, target)
                if delivery is not None:
                    return delivery
        return None

    def _read(self, folder: Folder, entry: Entry) -> Delivery | None:
        try:
            delivery = Delivery.from_json(read_regular(folder, entry.name, MAX_DELIVERY_BYTES), claim=entry.name)
        except (OSError, UnsafeEntry, ValueError) as error:
            log.error("removed the unreadable webhook delivery %s: %s", folder.child(entry.name), error)
            unlink_quietly(folder, entry.name)
            return None
        if delivery.id != entry.delivery_id:
            log.error("removed %s: it holds another delivery", folder.child(entry.name))
            unlink_quietly(folder, entry.name)
            return None
        return replace(delivery, attempts=entry.attempts, next_at=from_ms(entry.time_ms))

    def finish(self, delivery: Delivery) -> bool:
        with self.folders.open(*SENDING) as sending:
            try:
                os.unlink(str(delivery.claim), dir_fd=sending.fd)
            except FileNotFoundError:
                return False  # its lease ran out and another sender took it over
        return True

    def retry(self, delivery: Delivery) -> bool:
        held = Entry.parse(str(delivery.claim))
        if held is None:
            return False
        target = held._replace(time_ms=utc_ms(delivery.next_at), attempts=delivery.attempts)
        with self.folders.open(*SENDING) as sending, self.folders.open(*READY) as ready:
            try:
                os.rename(held.name, target.name, src_dir_fd=sending.fd, dst_dir_fd=ready.fd)
            except FileNotFoundError:
                return False
        return True

    def drop(self, keys: set[str], dry_run: bool = False) -> int:
        """Remove every delivery of these keys (jobs being removed), waiting or claimed; the bytes
        they took. A sender holding one finds its claim gone (`finish` says False)."""
        freed = 0
        for parts in (READY, SENDING):
            with self.folders.open(*parts) as folder:
                for entry in self._entries(folder):
                    if entry.key not in keys:
                        continue
                    try:
                        freed += os.stat(entry.name, dir_fd=folder.fd, follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue  # sent or moved meanwhile
                    if not dry_run:
                        unlink_quietly(folder, entry.name)
        return freed

    def size(self) -> int:
        """Bytes of every delivery waiting or claimed (for the store's size)."""
        total = 0
        for parts in (READY, SENDING):
            with self.folders.open(*parts) as folder:
                for entry in self._entries(folder):
                    try:
                        total += os.stat(entry.name, dir_fd=folder.fd, follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        return total

    def all(self) -> list[Delivery]:
        found = []
        for parts in (READY, SENDING):
            with self.folders.open(*parts) as folder:
                for entry in self._entries(folder):
                    try:
                        delivery = Delivery.from_json(read_regular(folder, entry.name, MAX_DELIVERY_BYTES),
                                                      claim=entry.name if parts is SENDING else None)
                    except (OSError, ValueError):
                        continue  # claimed or finished meanwhile, or not ours
                    found.append(replace(delivery, attempts=entry.attempts,
                                         next_at=delivery.next_at if parts is SENDING else from_ms(entry.time_ms)))
        return sorted(found, key=lambda delivery: (delivery.key, delivery.order))

    def secret(self, candidate: str) -> str:
        """The stored secret, or `candidate` stored now: a link makes exactly one writer win."""
        with self.folders.open(".state") as folder:
            try:
                write_new(folder, SECRET_NAME, candidate.encode(), mode=0o600)
            except FileExistsError:
                pass
            try:
                return read_regular(folder, SECRET_NAME, 4096).decode().strip()
            except (OSError, UnicodeDecodeError) as error:
                raise StoreWriteError(f"Cannot read the webhook secret {folder.child(SECRET_NAME)}: "
                                      f"{describe_os_error(error) if isinstance(error, OSError) else error}.") from None
