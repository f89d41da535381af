"""The dead-letter table: every message or batch item that was refused, with its raw bytes and the reason."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused message (``item_index`` -1) or one refused item of a batch message (its index).

    ``raw`` holds the refused bytes (for an item, the item re-encoded as JSON), cut to the configured maximum;
    ``raw_size`` is the original size and ``digest`` the SHA-256 of topic and original bytes, which makes a
    redelivered message land once.
    """

    topic: str
    raw: bytes
    raw_size: int
    digest: bytes
    item_index: int
    reason: str
    detail: str


def digest_of(topic: str, payload: bytes) -> bytes:
    """Return the SHA-256 of *topic* and *payload*: the identity of a message for de-duplication."""
    h = hashlib.sha256(topic.encode("utf-8", "surrogateescape"))
    h.update(b"\x00")
    h.update(payload)
    return h.digest()


def store_dead_letters(conn: psycopg.Connection[Any], letters: Sequence[DeadLetter]) -> None:
    """Insert *letters*; one already stored (same message and item) is skipped. The caller commits."""
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO dead_letter (topic, raw, raw_size, digest, item_index, reason, detail)
               VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (digest, item_index) DO NOTHING""",
            [(d.topic, d.raw, d.raw_size, d.digest, d.item_index, d.reason, d.detail) for d in letters],
        )


def recent_dead_letters(conn: psycopg.Connection[Any], *, limit: int = 100) -> list[dict[str, Any]]:
    """Return the newest dead letters (raw bytes included), newest first."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT id, received_at, topic, raw, raw_size, item_index, reason, detail FROM dead_letter"
        " ORDER BY id DESC LIMIT %s",
        (limit,),
    )
    return cur.fetchall()
