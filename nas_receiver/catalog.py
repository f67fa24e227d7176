"""The catalog: SQLite in WAL mode, the one shared state of the program.

Archives are identified by the SHA-256 of their bytes.  A *sighting* is a file seen in a
source folder; a *copy* is a place an archive is kept (the library, the quarantine, a
destination).  Every step records its state before and after the work, so a process killed
at any moment resumes cleanly: see ``recover``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .haformat import VerifyReport

SCHEMA_VERSION = 7

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE archives (
        sha256 TEXT PRIMARY KEY,
        slug TEXT, name TEXT, date TEXT, source TEXT NOT NULL, kind TEXT,
        ha_version TEXT, instance_id TEXT, protected INTEGER, size INTEGER NOT NULL,
        verdict TEXT NOT NULL, problems TEXT NOT NULL DEFAULT '[]',
        backup_json TEXT, verified_at REAL NOT NULL, first_seen REAL NOT NULL
    );
    CREATE TABLE sightings (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL, path TEXT NOT NULL,
        size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        state TEXT NOT NULL,
        stable_since REAL NOT NULL, first_seen REAL NOT NULL,
        sha256 TEXT, verdict TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        sidecar TEXT,
        UNIQUE (source, path)
    );
    CREATE INDEX sightings_state ON sightings (state);
    CREATE TABLE copies (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL, location TEXT NOT NULL, state TEXT NOT NULL,
        path TEXT, temp_path TEXT, copy_sha256 TEXT, verified INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL, detail TEXT
    );
    CREATE INDEX copies_sha ON copies (sha256, location);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, at REAL NOT NULL, level TEXT NOT NULL, kind TEXT NOT NULL,
        source TEXT, sha256 TEXT, message TEXT NOT NULL
    );
    """,
    2: """
    CREATE TABLE pins (sha256 TEXT PRIMARY KEY, pinned_at REAL NOT NULL);
    CREATE INDEX copies_location ON copies (location, state)
    """,
    3: """
    CREATE TABLE drills (
        id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, at REAL NOT NULL, verdict TEXT NOT NULL,
        changes TEXT NOT NULL DEFAULT '[]', checks TEXT NOT NULL, counts TEXT NOT NULL
    );
    CREATE INDEX drills_sha ON drills (sha256, at)
    """,
    4: """
    ALTER TABLE events ADD COLUMN sent INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET sent = 1
    """,
    5: """
    ALTER TABLE copies ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE copies ADD COLUMN next_try REAL;
    CREATE TABLE uploads (
        location TEXT NOT NULL, key TEXT NOT NULL, sha256 TEXT NOT NULL,
        upload_id TEXT NOT NULL, part_size INTEGER NOT NULL, started_at REAL NOT NULL,
        PRIMARY KEY (location, key)
    )
    """,
    # One place (library file, decrypted copy, browse folder, destination key) belongs to
    # one archive: two archives whose HA name and date coincide must never share one.
    6: """
    CREATE INDEX copies_place ON copies (location, path);
    CREATE TRIGGER copies_place_insert BEFORE INSERT ON copies
    WHEN NEW.path IS NOT NULL AND NEW.state IN ('placing', 'present', 'marked', 'failed')
      AND EXISTS (SELECT 1 FROM copies WHERE location = NEW.location AND path = NEW.path
                  AND sha256 != NEW.sha256
                  AND state IN ('placing', 'present', 'marked', 'failed'))
    BEGIN SELECT RAISE(ABORT, 'place held by another archive'); END;
    CREATE TRIGGER copies_place_update BEFORE UPDATE OF path, state ON copies
    WHEN NEW.path IS NOT NULL AND NEW.state IN ('placing', 'present', 'marked', 'failed')
      AND EXISTS (SELECT 1 FROM copies WHERE location = NEW.location AND path = NEW.path
                  AND sha256 != NEW.sha256 AND id != NEW.id
                  AND state IN ('placing', 'present', 'marked', 'failed'))
    BEGIN SELECT RAISE(ABORT, 'place held by another archive'); END
    """,
    # A file's identity beyond size and time (a replacement under the same name is a new
    # arrival), and jobs that failed: why, when to try again, and the room they wait for.
    7: """
    ALTER TABLE sightings ADD COLUMN identity TEXT;
    ALTER TABLE sightings ADD COLUMN error TEXT;
    ALTER TABLE sightings ADD COLUMN next_try REAL;
    ALTER TABLE sightings ADD COLUMN wait_bytes INTEGER;
    ALTER TABLE sightings ADD COLUMN wait_path TEXT
    """,
}
VANISHED = "vanished"  # the detail of a copy found missing rather than deleted
HOLDING_STATES = ("placing", "present", "marked", "failed")


class PlaceTaken(Exception):
    """A copy was to be recorded at a place another archive holds."""


ALERT_AFTER = 3  # a job's failures in a row before the user is told (pipeline, status)


class SightingState:
    """Where a file seen in a source folder is in its way through the program."""

    WAITING = "waiting"  # seen; waits to stop changing
    VERIFYING = "verifying"  # taken by a worker (reset to waiting on recovery)
    INCOMPLETE = "incomplete"  # verified incomplete; waits to change, or to be given up
    DONE = "done"  # verified and kept (library or quarantine)
    GONE = "gone"  # deleted from the source (HA's own retention)
    FAILED = "failed"  # keeping it failed (disk full, unreadable): tried again at next_try


class CopyState:
    PLACING = "placing"  # being written under temp_path
    PRESENT = "present"  # in place, checksum checked
    MARKED = "marked"  # marked for deletion (retention), not yet deleted
    FAILED = "failed"  # a destination refused it; detail says why
    DELETED = "deleted"


@dataclass(frozen=True)
class Sighting:
    id: int
    source: str
    path: str
    size: int
    mtime_ns: int
    state: str
    stable_since: float
    first_seen: float
    sha256: str | None
    verdict: str | None
    attempts: int
    sidecar: str | None
    identity: str | None = None
    error: str | None = None
    next_try: float | None = None
    wait_bytes: int | None = None
    wait_path: str | None = None


@dataclass(frozen=True)
class Copy:
    id: int
    sha256: str
    location: str
    state: str
    path: str | None
    temp_path: str | None
    copy_sha256: str | None
    verified: bool
    updated_at: float
    detail: str | None
    attempts: int = 0
    next_try: float | None = None

    @property
    def claimed(self) -> bool:
        """At a destination: the copy may have left something at its key, an object
        without our marker included (see ``begin_copy`` and ``claim_copy``)."""
        return self.path is not None and self.temp_path == self.path


@dataclass(frozen=True)
class Upload:
    """A multipart upload under way at a destination: enough to continue it after a stop."""

    location: str
    key: str
    sha256: str
    upload_id: str
    part_size: int
    started_at: float


class Catalog:
    """Thread-safe access to the catalog file: one SQLite connection per thread."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._readonly = readonly
        self._local = threading.local()
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._migrate()

    # -- plumbing ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._readonly:
                uri = f"file:{self.path}?mode=ro"
                connection = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
            else:
                connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
            connection.row_factory = sqlite3.Row
            self._local.connection = connection
        return connection

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: catalog schema {version} is newer than this program's "
                    f"({SCHEMA_VERSION}); upgrade nas-receiver"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _statements(_MIGRATIONS[step]):
                    db.execute(statement)
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:  # no write when there is nothing to change
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int | None:
        """The schema of the file (a reader opened while an older daemon still runs may
        find an older one)."""
        rows = self._query("SELECT version FROM schema_version")
        return int(rows[0][0]) if rows else None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._connection().execute(sql, params).fetchall()

    # -- sightings -----------------------------------------------------------------------------

    def sightings(self, source: str | None = None, states: Sequence[str] = ()) -> list[Sighting]:
        sql, params = "SELECT * FROM sightings WHERE 1", []
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += list(states)
        return [Sighting(**dict(row)) for row in self._query(sql + " ORDER BY id", params)]

    def sighting(self, sighting_id: int) -> Sighting | None:
        rows = self._query("SELECT * FROM sightings WHERE id = ?", (sighting_id,))
        return Sighting(**dict(rows[0])) if rows else None

    def observe(
        self,
        source: str,
        path: str,
        size: int,
        mtime_ns: int,
        now: float,
        sidecar: str | None = None,
        identity: str | None = None,
    ) -> str:
        """Record a file as seen now.  Return ``new``, ``changed``, ``replaced`` or ``same``.

        ``identity`` (inode and change time) tells a replacement that kept the size and
        modification time (``cp -p``, coarse network-share clocks): it is a new arrival."""
        mtime = mtime_ns / 1e9
        stable_since = min(now, mtime)  # unchanged since its last write, as far as we know
        with self.transaction() as db:
            row = db.execute(
                "SELECT * FROM sightings WHERE source = ? AND path = ?", (source, path)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO sightings (source, path, size, mtime_ns, state, stable_since,"
                    " first_seen, sidecar, identity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        source,
                        path,
                        size,
                        mtime_ns,
                        SightingState.WAITING,
                        stable_since,
                        now,
                        sidecar,
                        identity,
                    ),
                )
                return "new"
            if sidecar != row["sidecar"]:
                db.execute("UPDATE sightings SET sidecar = ? WHERE id = ?", (sidecar, row["id"]))
            same_file = row["identity"] is None or identity is None or row["identity"] == identity
            if (
                row["size"] == size
                and row["mtime_ns"] == mtime_ns
                and same_file
                and row["state"] != "gone"
            ):
                if row["identity"] is None and identity is not None:
                    db.execute(
                        "UPDATE sightings SET identity = ? WHERE id = ?", (identity, row["id"])
                    )
                return "same"
            replaced = row["state"] in (SightingState.DONE, SightingState.GONE)
            db.execute(
                "UPDATE sightings SET size = ?, mtime_ns = ?, identity = ?, state = ?,"
                " stable_since = ?, sha256 = NULL, verdict = NULL, error = NULL,"
                " next_try = NULL, wait_bytes = NULL, wait_path = NULL,"
                " attempts = CASE WHEN ? THEN 0 ELSE attempts END WHERE id = ?",
                (size, mtime_ns, identity, SightingState.WAITING, now, replaced, row["id"]),
            )
            return "replaced" if replaced else "changed"

    def has_sidecars(self, source: str) -> bool:
        """True when archives in this source come with sidecars (HA's Synology agent)."""
        rows = self._query(
            "SELECT 1 FROM sightings WHERE source = ? AND sidecar IS NOT NULL LIMIT 1", (source,)
        )
        return bool(rows)

    def count_sightings(self, states: Sequence[str]) -> int:
        marks = ",".join("?" * len(states))
        rows = self._query(f"SELECT COUNT(*) FROM sightings WHERE state IN ({marks})", states)  # noqa: S608
        return int(rows[0][0])

    def mark_gone(self, sighting_id: int) -> None:
        self._set_state(sighting_id, SightingState.GONE)

    def take(self, sighting_id: int, size: int, mtime_ns: int) -> bool:
        """Claim a waiting sighting for verification; False if it changed or was taken."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE sightings SET state = ?, attempts = attempts + 1 WHERE id = ? AND"
                " state IN (?, ?, ?) AND size = ? AND mtime_ns = ?",
                (
                    SightingState.VERIFYING,
                    sighting_id,
                    SightingState.WAITING,
                    SightingState.INCOMPLETE,
                    SightingState.FAILED,
                    size,
                    mtime_ns,
                ),
            )
            return cursor.rowcount == 1

    def fail_sighting(
        self,
        sighting_id: int,
        error: str,
        next_try: float,
        *,
        wait_bytes: int | None = None,
        wait_path: str | None = None,
    ) -> None:
        """Keeping this file failed for ``error``; try again at ``next_try`` (and, when it
        waits for room, once ``wait_bytes`` are free in ``wait_path``)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE sightings SET state = ?, error = ?, next_try = ?, wait_bytes = ?,"
                " wait_path = ? WHERE id = ?",
                (SightingState.FAILED, error, next_try, wait_bytes, wait_path, sighting_id),
            )

    def finish_sighting(
        self, sighting_id: int, state: str, sha256: str | None, verdict: str | None
    ) -> None:
        """Record the verdict of a verification.  A file seen changed meanwhile (``observe``
        set it waiting again) keeps waiting: what was verified is not what is there now."""
        with self.transaction() as db:
            db.execute(
                "UPDATE sightings SET state = ?, sha256 = ?, verdict = ?, error = NULL,"
                " next_try = NULL, wait_bytes = NULL, wait_path = NULL WHERE id = ? AND state = ?",
                (state, sha256, verdict, sighting_id, SightingState.VERIFYING),
            )

    def release(self, sighting_id: int) -> None:
        """Give a sighting back to the waiting state (verification stopped or the file moved)."""
        self._set_state(sighting_id, SightingState.WAITING)

    def _set_state(self, sighting_id: int, state: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE sightings SET state = ? WHERE id = ?", (state, sighting_id))

    # -- archives ------------------------------------------------------------------------------

    def record_archive(self, report: VerifyReport, source: str, now: float) -> None:
        """Insert or refresh an archive from its verification report (full level)."""
        assert report.sha256 is not None
        backup = report.backup
        values = {
            "sha256": report.sha256,
            "slug": backup.slug if backup else None,
            "name": backup.name if backup else Path(report.path).name,
            "date": backup.date.isoformat() if backup else None,
            "source": source,
            "kind": backup.kind if backup else None,
            "ha_version": backup.homeassistant_version if backup else None,
            "instance_id": backup.instance_id if backup else None,
            "protected": int(backup.protected) if backup else None,
            "size": report.size,
            "verdict": str(report.verdict),
            "problems": json.dumps(report.problems),
            "backup_json": backup.to_json() if backup else None,
            "verified_at": now,
            "first_seen": now,
        }
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        updates = ", ".join(
            f"{key} = excluded.{key}" for key in values if key not in ("sha256", "first_seen")
        )
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO archives ({columns}) VALUES ({marks}) "  # noqa: S608
                f"ON CONFLICT (sha256) DO UPDATE SET {updates}",
                list(values.values()),
            )

    def archives(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM archives ORDER BY date, sha256")
        return [dict(row) for row in rows]

    def archive_summaries(self) -> list[dict[str, Any]]:
        """Every archive's SHA-256, name, source, verdict and first sighting (for status:
        without the stored backup.json, which it does not need)."""
        rows = self._query(
            "SELECT sha256, name, source, verdict, first_seen FROM archives ORDER BY date, sha256"
        )
        return [dict(row) for row in rows]

    def newest_archives(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` archives that arrived last, newest first (by arrival, as ``status``
        counts them: a date written in a backup.json may be anything)."""
        rows = self._query(
            "SELECT sha256, name, date, source, verdict, size, first_seen FROM archives"
            " ORDER BY first_seen DESC, sha256 LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    def archives_with_copies(self, locations: Sequence[str]) -> list[dict[str, Any]]:
        """Valid archives with a present, verified copy at any of ``locations``, oldest first,
        in one query: each archive's columns plus ``copy_location``, ``copy_path`` and
        ``copy_sha`` (one row per such copy, in the order of ``locations`` per archive)."""
        marks = ",".join("?" * len(locations))  # only "?" marks are formatted into the SQL
        rows = self._query(
            "SELECT a.*, c.location AS copy_location, c.path AS copy_path,"  # noqa: S608
            " c.copy_sha256 AS copy_sha FROM archives a JOIN copies c ON c.sha256 = a.sha256"
            f" WHERE a.verdict = 'valid' AND c.location IN ({marks}) AND c.state = ?"
            " AND c.verified = 1 AND c.path IS NOT NULL ORDER BY a.date, a.sha256, c.id",
            (*locations, CopyState.PRESENT),
        )
        return [dict(row) for row in rows]

    def archive(self, sha256: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM archives WHERE sha256 = ?", (sha256,))
        return dict(rows[0]) if rows else None

    # -- copies --------------------------------------------------------------------------------

    def copies(self, sha256: str | None = None, location: str | None = None) -> list[Copy]:
        sql, params = "SELECT * FROM copies WHERE 1", []
        if sha256 is not None:
            sql += " AND sha256 = ?"
            params.append(sha256)
        if location is not None:
            sql += " AND location = ?"
            params.append(location)
        return [
            Copy(**{**dict(row), "verified": bool(row["verified"])})
            for row in self._query(sql + " ORDER BY id", params)
        ]

    def begin_copy(
        self,
        sha256: str,
        location: str,
        now: float,
        *,
        temp_path: str | None = None,
        key: str | None = None,
        replace_unfinished: bool = False,
    ) -> int:
        """Record, before the work, that a copy is being made at the place ``key`` (a final
        path, or a destination's object key), written under ``temp_path`` where it is a file
        of ours (removed by recovery).  An earlier failed attempt is replaced (its count
        carries on), and with ``replace_unfinished`` one a stop cut short too, in one transaction
        (a kill in between never loses the record of what was written).  Raise PlaceTaken
        when another archive holds ``key``.

        At a destination ``temp_path`` is the key itself once the copy has claimed it
        (``claim_copy``): from then on an object there without our marker is this copy,
        cut short.  Pass ``temp_path=key`` to carry a claim over to the new attempt."""
        replaced = [CopyState.FAILED] + ([CopyState.PLACING] if replace_unfinished else [])
        marks = ",".join("?" * len(replaced))
        with self.transaction() as db:
            failed = db.execute(
                "SELECT MAX(attempts) FROM copies WHERE sha256 = ? AND location = ?"  # noqa: S608
                f" AND state IN ({marks})",
                (sha256, location, *replaced),
            ).fetchone()[0]
            db.execute(
                "DELETE FROM copies WHERE sha256 = ? AND location = ?"  # noqa: S608
                f" AND state IN ({marks})",
                (sha256, location, *replaced),
            )
            try:
                cursor = db.execute(
                    "INSERT INTO copies (sha256, location, state, temp_path, path, updated_at,"
                    " attempts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (sha256, location, CopyState.PLACING, temp_path, key, now, failed or 0),
                )
            except sqlite3.IntegrityError as err:
                raise PlaceTaken(f"{location}: {key} belongs to another archive") from err
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def holder(self, location: str, place: str) -> str | None:
        """The SHA-256 of the archive that holds ``place`` at ``location``, if any."""
        marks = ",".join("?" * len(HOLDING_STATES))
        rows = self._query(
            "SELECT sha256 FROM copies WHERE location = ? AND path = ?"  # noqa: S608
            f" AND state IN ({marks}) LIMIT 1",
            (location, place, *HOLDING_STATES),
        )
        return str(rows[0][0]) if rows else None

    def fail_copy(
        self, copy_id: int, reason: str, now: float, next_try: float | None = None
    ) -> None:
        """The copy failed for ``reason``; try again no sooner than ``next_try``."""
        with self.transaction() as db:
            db.execute(
                "UPDATE copies SET state = ?, detail = ?, updated_at = ?, next_try = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                (CopyState.FAILED, reason, now, next_try, copy_id),
            )

    def finish_copy(
        self,
        copy_id: int,
        path: str,
        copy_sha256: str,
        *,
        verified: bool,
        now: float,
        detail: str | None = None,
    ) -> None:
        try:
            with self.transaction() as db:
                db.execute(
                    "UPDATE copies SET state = ?, path = ?, temp_path = NULL, copy_sha256 = ?,"
                    " verified = ?, updated_at = ?, detail = ? WHERE id = ?",
                    (CopyState.PRESENT, path, copy_sha256, int(verified), now, detail, copy_id),
                )
        except sqlite3.IntegrityError as err:
            raise PlaceTaken(f"{path} belongs to another archive") from err

    def claim_copy(self, copy_id: int) -> None:
        """At a destination: the copy is about to appear at its key (see ``begin_copy``)."""
        with self.transaction() as db:
            db.execute("UPDATE copies SET temp_path = path WHERE id = ?", (copy_id,))

    def unclaim_copy(self, copy_id: int) -> None:
        """At a destination: the copy's key turned out not to be its to take."""
        with self.transaction() as db:
            db.execute("UPDATE copies SET temp_path = NULL WHERE id = ?", (copy_id,))

    def drop_copy(self, copy_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM copies WHERE id = ?", (copy_id,))

    def held_at(self, locations: Sequence[str]) -> list[tuple[Any, ...]]:
        """Each archive with a present copy at any of ``locations``: what retention needs,
        in one query, as plain tuples (tens of thousands of rows): (sha256, name, date,
        first_seen, instance_id, source, kind, verdict, verified)."""
        cursor = self._connection().cursor()
        cursor.row_factory = None
        marks = ",".join("?" * len(locations))  # only "?" marks are formatted into the SQL
        where = f"c.location IN ({marks}) AND c.state = ?"
        sql = (
            "SELECT a.sha256, a.name, a.date, a.first_seen, a.instance_id, a.source, a.kind,"  # noqa: S608
            " a.verdict, MAX(c.verified) FROM copies c JOIN archives a ON a.sha256 = c.sha256"
            " WHERE " + where + " GROUP BY a.sha256"
        )
        return cursor.execute(sql, (*locations, CopyState.PRESENT)).fetchall()

    def present_copies(self, other_than: Sequence[str]) -> list[tuple[str, str, bool]]:
        """(sha256, location, verified) of every present copy at other locations."""
        marks = ",".join("?" * len(other_than))
        rows = self._query(
            "SELECT sha256, location, verified FROM copies WHERE state = ?"  # noqa: S608
            f" AND location NOT IN ({marks})",
            (CopyState.PRESENT, *other_than),
        )
        return [(row[0], row[1], bool(row[2])) for row in rows]

    def mark_copy(self, copy_id: int, now: float) -> None:
        """First step of a deletion: recorded before the file or object is touched."""
        with self.transaction() as db:
            db.execute(
                "UPDATE copies SET state = ?, updated_at = ? WHERE id = ?",
                (CopyState.MARKED, now, copy_id),
            )

    def copy_deleted(self, copy_id: int, now: float, *, vanished: bool = False) -> None:
        """Second step: the file or object is gone.  ``vanished``: not deleted by us but
        found missing (it is sent again; what retention deleted is not)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE copies SET state = ?, updated_at = ?,"
                " detail = CASE WHEN ? THEN ? ELSE detail END WHERE id = ?",
                (CopyState.DELETED, now, vanished, VANISHED, copy_id),
            )

    def pruned_at(self, location: str) -> set[str]:
        """The archives retention deleted from ``location`` (not those found missing)."""
        rows = self._query(
            "SELECT DISTINCT sha256 FROM copies WHERE location = ? AND state = ?"
            " AND COALESCE(detail, '') != ?",
            (location, CopyState.DELETED, VANISHED),
        )
        return {row[0] for row in rows}

    # -- uploads under way ---------------------------------------------------------------------

    def upload(self, location: str, key: str) -> Upload | None:
        rows = self._query("SELECT * FROM uploads WHERE location = ? AND key = ?", (location, key))
        return Upload(**dict(rows[0])) if rows else None

    def uploads(self, location: str) -> list[Upload]:
        rows = self._query("SELECT * FROM uploads WHERE location = ?", (location,))
        return [Upload(**dict(row)) for row in rows]

    def record_upload(self, upload: Upload) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
                (
                    upload.location,
                    upload.key,
                    upload.sha256,
                    upload.upload_id,
                    upload.part_size,
                    upload.started_at,
                ),
            )

    def forget_upload(self, location: str, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM uploads WHERE location = ? AND key = ?", (location, key))

    # -- drills --------------------------------------------------------------------------------

    def record_drill(self, sha256: str, result: dict[str, Any], now: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO drills (sha256, at, verdict, changes, checks, counts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    sha256,
                    now,
                    result["verdict"],
                    json.dumps(result["changes"]),
                    json.dumps(result["checks"]),
                    json.dumps(result["counts"]),
                ),
            )

    def latest_drills(self) -> dict[str, dict[str, Any]]:
        """The newest drill of every archive, by SHA-256."""
        rows = self._query(
            "SELECT d.* FROM drills d JOIN (SELECT sha256, MAX(id) AS id FROM drills"
            " GROUP BY sha256) latest ON latest.id = d.id"
        )
        return {
            row["sha256"]: {
                "verdict": row["verdict"],
                "at": row["at"],
                "changes": json.loads(row["changes"]),
                "checks": json.loads(row["checks"]),
                "counts": json.loads(row["counts"]),
            }
            for row in rows
        }

    # -- pins ----------------------------------------------------------------------------------

    def pin(self, sha256: str, now: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO pins VALUES (?, ?)", (sha256, now))

    def unpin(self, sha256: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM pins WHERE sha256 = ?", (sha256,))

    def pinned(self) -> set[str]:
        return {row[0] for row in self._query("SELECT sha256 FROM pins")}

    def find_archives(self, needle: str) -> list[dict[str, Any]]:
        """Archives whose SHA-256 starts with, or whose slug or name is, ``needle``."""
        rows = self._query(
            "SELECT * FROM archives WHERE sha256 LIKE ? OR slug = ? OR name = ?",
            (needle.lower() + "%", needle, needle),
        )
        return [dict(row) for row in rows]

    # -- events --------------------------------------------------------------------------------

    def event(
        self,
        kind: str,
        message: str,
        *,
        level: str = "info",
        source: str | None = None,
        sha256: str | None = None,
        now: float | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events (at, level, kind, source, sha256, message)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (now or time.time(), level, kind, source, sha256, message),
            )

    def unsent_events(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Events of these kinds not yet sent as notifications, oldest first."""
        marks = ",".join("?" * len(kinds))
        rows = self._query(
            f"SELECT * FROM events WHERE sent = 0 AND kind IN ({marks}) ORDER BY id",  # noqa: S608
            list(kinds),
        )
        return [dict(row) for row in rows]

    def mark_sent(self, event_id: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE events SET sent = 1 WHERE id = ?", (event_id,))

    def last_event_at(self, kind: str, source: str | None) -> float | None:
        rows = self._query(
            "SELECT MAX(at) FROM events WHERE kind = ? AND source IS ?", (kind, source)
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(row) for row in rows]


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements; a trigger's body keeps its own semicolons."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending
