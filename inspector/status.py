"""The states a finding's review and a scan go through, in one place (string enums: they are
stored in SQLite and compared with strings as they are)."""
from __future__ import annotations

from enum import StrEnum


class Review(StrEnum):
    """A finding's review decision."""

    OPEN = "open"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class ScanState(StrEnum):
    """A scan of one video; ``SKIPPED`` is a result only (already done, nothing to scan)."""

    RUNNING = "running"
    DONE = "done"
    PARTIAL = "partial"  # the file stops decoding part-way: what came before is kept
    INTERRUPTED = "interrupted"  # cancelled or killed: the same command resumes it
    SKIPPED = "skipped"
