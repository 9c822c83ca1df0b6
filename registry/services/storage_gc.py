"""Garbage collection of artifact blobs that no version references.

Deleting a version or a model never deletes bytes (a blob may be shared by identical
artifacts, and must outlive the commit that stops referencing it). This sweep removes what
nothing references any more. Each blob is checked and deleted under the same lock a
registration takes before storing its blob (`Repository.lock_blob`), and a registration in
flight is recorded in `pending_uploads`, so a blob is never removed from under a
registration, even one that re-uses the bytes of an old orphan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from registry.db import utcnow
from registry.unit_of_work import UnitOfWorkProvider
from storage import ArtifactStore

log = logging.getLogger(__name__)

# A registration that has not finished in this long has died; its marker no longer protects.
PENDING_EXPIRY = timedelta(hours=24)
# A staged upload nobody has written to for this long was abandoned (its request died).
# Independent of the blob grace period: an upload in progress must never be swept.
STAGING_EXPIRY = timedelta(hours=1)


@dataclass
class GcReport:
    scanned: int = 0
    deleted: list[str] = field(default_factory=list)
    deleted_bytes: int = 0
    referenced: int = 0
    too_recent: int = 0
    staging_removed: int = 0
    expired_markers: int = 0
    dry_run: bool = False


def collect_garbage(
    uow: UnitOfWorkProvider,
    store: ArtifactStore,
    *,
    grace: timedelta = timedelta(hours=1),
    dry_run: bool = False,
) -> GcReport:
    """Delete blobs that no version references and no registration is writing."""
    report = GcReport(dry_run=dry_run)
    now = utcnow()
    cutoff = now - grace
    for blob in store.iter_blobs():
        report.scanned += 1
        if blob.modified_at > cutoff:
            report.too_recent += 1
            continue
        sha256 = blob.key.rsplit("/", 1)[-1]
        with uow(write=True) as work:
            work.repo.lock_blob(sha256)
            in_use = work.repo.blob_in_use(sha256, pending_since=now - PENDING_EXPIRY)
            if in_use:
                report.referenced += 1
                continue
            if not dry_run:
                store.delete(blob.key)  # under the lock: no registration can start meanwhile
            work.commit()
        report.deleted.append(blob.key)
        report.deleted_bytes += blob.size
        log.info(
            "storage gc %s %s (%d bytes)",
            "would delete" if dry_run else "deleted",
            blob.key,
            blob.size,
        )
    if not dry_run:
        report.staging_removed = store.clean_staging(older_than=now - max(grace, STAGING_EXPIRY))
        with uow(write=True) as work:
            report.expired_markers = work.repo.delete_pending_uploads_before(now - PENDING_EXPIRY)
            work.commit()
    return report
