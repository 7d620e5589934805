"""What the server records itself, in its own tables next to MLflow's auth tables (PostgreSQL or SQLite).

- `dxpipe_reviewers`: who holds the reviewer role (granted and revoked by an admin, each change audited).
- `dxpipe_run_creators` / `dxpipe_version_creators`: the authenticated user who created each run and
  model version. These rows, not tags, are the authors the four-eyes rule checks: a tag is editable,
  these are written only by the server after MLflow's handler succeeded.
- `dxpipe_audit`: one row per guarded request (accepted, refused, and what MLflow answered) and per
  creation, with the authenticated user. Append-only: an accepted request's row is written *before*
  MLflow's handler runs, and the only update the app ever makes fills in the HTTP status the handler
  answered (a row left without status means the server died in between: outcome unknown). No code path
  deletes a row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()

reviewers = sa.Table(
    "dxpipe_reviewers",
    metadata,
    sa.Column("username", sa.String(256), primary_key=True),
    sa.Column("granted_by", sa.String(256), nullable=False),
    sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
)

run_creators = sa.Table(
    "dxpipe_run_creators",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

version_creators = sa.Table(
    "dxpipe_version_creators",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("username", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

audit = sa.Table(
    "dxpipe_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("username", sa.String(256), nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("model", sa.String(256), nullable=True),
    sa.Column("version", sa.String(32), nullable=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("allowed", sa.Boolean, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
)

# Any constant works: it only has to be the same in every worker that creates the tables.
_SCHEMA_LOCK_KEY = 0x6478_7069_7065


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(moment: dt.datetime) -> str:
    # SQLite returns naive datetimes for timezone-aware columns; every value written here is UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One audit row (see the module docstring)."""

    at: str
    user: str | None
    action: str
    model: str | None
    version: str | None
    run_id: str | None
    detail: str | None
    allowed: bool
    status: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


class Records:
    """The server's own tables over one SQLAlchemy engine."""

    def __init__(self, database_uri: str) -> None:
        """Connects and creates the tables if missing.

        Args:
            database_uri: A SQLAlchemy URI (the auth app's `database_uri` unless configured apart).
        """
        self.engine: Engine = sa.create_engine(database_uri, pool_pre_ping=True)
        with self._tx() as conn:
            if conn.dialect.name == "postgresql":
                # Every uvicorn worker builds the app at start-up; without a lock two of them race on
                # CREATE TABLE and one dies with a duplicate-table error (checkfirst is not atomic).
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            metadata.create_all(conn, checkfirst=True)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # Reviewers ---------------------------------------------------------------------------------------
    def is_reviewer(self, username: str) -> bool:
        """Whether `username` holds the reviewer role (exact name: it is the authenticated account)."""
        with self._tx() as conn:
            row = conn.execute(sa.select(reviewers.c.username).where(reviewers.c.username == username))
            return row.first() is not None

    def list_reviewers(self) -> list[str]:
        """All reviewers, sorted."""
        with self._tx() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(reviewers.c.username)))

    def set_reviewer(self, username: str, reviewer: bool, by: str) -> bool:
        """Grants or revokes the role; returns whether anything changed. Audited in the same transaction."""
        with self._tx() as conn:
            exists = conn.execute(
                sa.select(reviewers.c.username).where(reviewers.c.username == username)
            ).first()
            changed = bool(exists) != reviewer
            if changed and reviewer:
                conn.execute(reviewers.insert().values(username=username, granted_by=by, granted_at=_now()))
            elif changed:
                conn.execute(reviewers.delete().where(reviewers.c.username == username))
            verb = "grant_reviewer" if reviewer else "revoke_reviewer"
            self._append(
                conn,
                user=by,
                action=verb,
                detail=username,
                allowed=True,
                status=200,
                reason=f"'{by}' {'granted' if reviewer else 'revoked'} the reviewer role of '{username}'"
                + ("" if changed else " (no change)"),
            )
            return changed

    # Creators ----------------------------------------------------------------------------------------
    def record_run(self, run_id: str, username: str) -> None:
        """Records the authenticated creator of a run (and audits it)."""
        with self._tx() as conn:
            conn.execute(run_creators.delete().where(run_creators.c.run_id == run_id))
            conn.execute(run_creators.insert().values(run_id=run_id, username=username, created_at=_now()))
            self._append(
                conn,
                user=username,
                action="create_run",
                run_id=run_id,
                allowed=True,
                status=200,
                reason=f"run created by '{username}'",
            )

    def record_version(self, model: str, version: str, run_id: str | None, username: str) -> None:
        """Records the authenticated creator of a model version (and audits it)."""
        key = (version_creators.c.model == model) & (version_creators.c.version == version)
        with self._tx() as conn:
            # A version number is reused only after its model was deleted (a reviewer's act); the new
            # version's creator replaces the old row.
            conn.execute(version_creators.delete().where(key))
            conn.execute(
                version_creators.insert().values(
                    model=model, version=version, run_id=run_id or None, username=username, created_at=_now()
                )
            )
            self._append(
                conn,
                user=username,
                action="create_model_version",
                model=model,
                version=version,
                run_id=run_id,
                allowed=True,
                status=200,
                reason=f"model version created by '{username}'",
            )

    def rename_model(self, old: str, new: str) -> None:
        """Keeps the creators of a renamed model's versions attached to its new name."""
        with self._tx() as conn:
            conn.execute(version_creators.update().where(version_creators.c.model == old).values(model=new))

    def run_creator(self, run_id: str) -> str | None:
        """The recorded creator of a run, or None."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(run_creators.c.username).where(run_creators.c.run_id == run_id)
            ).first()
            return None if row is None else row[0]

    def version_creator(self, model: str, version: str) -> tuple[str, str | None] | None:
        """The recorded (creator, run_id) of a model version, or None."""
        key = (version_creators.c.model == model) & (version_creators.c.version == version)
        with self._tx() as conn:
            row = conn.execute(
                sa.select(version_creators.c.username, version_creators.c.run_id).where(key)
            ).first()
            return None if row is None else (row[0], row[1])

    def version_created_at(self, model: str, version: str) -> str | None:
        """When the server recorded the version's creation (ISO 8601, comparable with audit times), or None."""
        key = (version_creators.c.model == model) & (version_creators.c.version == version)
        with self._tx() as conn:
            row = conn.execute(sa.select(version_creators.c.created_at).where(key)).first()
            return None if row is None else _iso(row[0])

    # Audit -------------------------------------------------------------------------------------------
    def append(self, **fields: Any) -> int:
        """Appends one audit row (fields as in `AuditEntry`, without `at`); returns its id."""
        with self._tx() as conn:
            return self._append(conn, **fields)

    def set_status(self, entry_id: int, status: int) -> None:
        """Fills in the HTTP status MLflow answered for an accepted request (rows without one only)."""
        with self._tx() as conn:
            conn.execute(
                audit.update()
                .where((audit.c.id == entry_id) & audit.c.status.is_(None))
                .values(status=status)
            )

    @staticmethod
    def _append(conn: Connection, **fields: Any) -> int:
        fields.setdefault("reason", "")
        result = conn.execute(audit.insert().values(at=_now(), username=fields.pop("user", None), **fields))
        return int(result.inserted_primary_key[0])

    def entries(
        self,
        *,
        model: str | None = None,
        version: str | None = None,
        action: str | None = None,
        allowed: bool | None = None,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Audit rows, oldest first, optionally filtered."""
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        for column, value in (
            (audit.c.model, model),
            (audit.c.version, version),
            (audit.c.action, action),
            (audit.c.allowed, allowed),
        ):
            if value is not None:
                query = query.where(column == value)
        with self._tx() as conn:
            rows = list(conn.execute(query))
        return [
            AuditEntry(
                at=_iso(r.at),
                user=r.username,
                action=r.action,
                model=r.model,
                version=r.version,
                run_id=r.run_id,
                detail=r.detail,
                allowed=r.allowed,
                status=r.status,
                reason=r.reason,
            )
            for r in reversed(rows)
        ]
