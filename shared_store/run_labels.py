"""Tags, metadata, rerun link, ttl and webhook target of a run: written with its start (or a schedule's
firing), inside the caller's write transaction, into the runs row and the filter tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apsw

from .codec import decode, encode
from .run_filter import FilterInvalid, check_metadata, check_tags, metadata_text
from .webhooks import check_url

SET_LABELS = (
    "UPDATE runs SET tags = :tags, metadata = :metadata, rerun_of = :rerun_of, ttl_s = :ttl_s, "
    "webhook_url = :webhook_url WHERE run_id = :run_id"
)
INSERT_TAG = "INSERT OR IGNORE INTO run_tags (tag, created_at, run_id) VALUES (?, ?, ?)"
INSERT_METADATA = "INSERT OR IGNORE INTO run_metadata (key, value, created_at, run_id) VALUES (?, ?, ?, ?)"
# A schedule's child inherits its parent's labels (run with the parent's fenced save that creates it;
# :run_id the parent, :child_run_id the child, :created_at the child's).
INHERIT_LABELS = (
    "UPDATE runs SET (tags, metadata, ttl_s, webhook_url) = (SELECT p.tags, p.metadata, p.ttl_s, "
    "p.webhook_url FROM runs p WHERE p.run_id = :run_id) WHERE run_id = :child_run_id",
    "INSERT OR IGNORE INTO run_tags (tag, created_at, run_id) SELECT tag, :created_at, :child_run_id "
    "FROM run_tags INDEXED BY run_tags_run WHERE run_id = :run_id",
    "INSERT OR IGNORE INTO run_metadata (key, value, created_at, run_id) SELECT key, value, :created_at, "
    ":child_run_id FROM run_metadata INDEXED BY run_metadata_run WHERE run_id = :run_id",
)
LABELS_OF = "SELECT tags, metadata, ttl_s, webhook_url FROM runs WHERE run_id = ?"
RUN_LABELS = "SELECT tags, metadata, rerun_of FROM runs WHERE run_id = ?"
RERUNS_OF = "SELECT run_id FROM runs INDEXED BY runs_rerun_of WHERE rerun_of = ? ORDER BY created_at, run_id"


@dataclass(frozen=True)
class Labels:
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    rerun_of: str | None = None
    ttl_s: float | None = None
    webhook_url: str | None = None

    @classmethod
    def checked(cls, *, tags: Any = None, metadata: Any = None, **rest: Any) -> Labels:
        """Validated tags/metadata and webhook URL (FilterInvalid names the field)."""
        url = rest.get("webhook_url")
        if url is not None:
            try:
                check_url(url)
            except ValueError as exc:
                raise FilterInvalid(f"webhook_url: {exc}") from None
        return cls(
            tags=check_tags(tags) if tags is not None else (),
            metadata=check_metadata(metadata) if metadata is not None else None,
            **rest,
        )

    def is_empty(self) -> bool:
        return self == Labels()


def write_labels(conn: apsw.Connection, run_id: str, created_at: str, labels: Labels) -> None:
    """Inside the transaction that creates the run."""
    if labels.is_empty():
        return
    conn.execute(
        SET_LABELS,
        {
            "run_id": run_id,
            "tags": encode(list(labels.tags)) if labels.tags else None,
            "metadata": encode(labels.metadata) if labels.metadata else None,
            "rerun_of": labels.rerun_of,
            "ttl_s": labels.ttl_s,
            "webhook_url": labels.webhook_url,
        },
    )
    for tag in labels.tags:
        conn.execute(INSERT_TAG, (tag, created_at, run_id))
    for key, value in (labels.metadata or {}).items():
        text = metadata_text(value)
        if text is not None:
            conn.execute(INSERT_METADATA, (key, text, created_at, run_id))


def read_labels(conn: apsw.Connection, run_id: str) -> Labels:
    """A run's tags, metadata, ttl and webhook target (what a schedule's children inherit)."""
    row = conn.execute(LABELS_OF, (run_id,)).fetchone()
    if row is None:
        return Labels()
    tags, metadata, ttl_s, webhook_url = row
    return Labels(
        tags=tuple(decode(tags)) if tags else (),
        metadata=decode(metadata) if metadata else None,
        ttl_s=ttl_s,
        webhook_url=webhook_url,
    )
