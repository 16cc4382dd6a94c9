"""The label store's tables (written by ``rewardlab label``), and its rankings read back as data rows.

One layout serves SQLite (the default: a file, WAL mode) and PostgreSQL (a team on several machines), through
SQLAlchemy Core. The labelling tool (:mod:`rewardlab.label.store`) writes these tables; training reads a store
directly (``rewardlab train --data labels.sqlite`` or ``--data postgresql://...``) through
:func:`read_store_rows`, which yields exactly the rows ``rewardlab label --export`` writes: the ``rankings``
format, one row per (labeler, prompt) ranking, ``{"prompt", "responses", "ranks", "labeler", "item", ...}``.
Skipped and flagged prompts and known-answer check items are never training rows.

Tables (each name starts with ``label_`` so a database shared with other tools stays readable):

- ``label_meta``: ``key -> value`` (the layout version, the candidates' fingerprint and file)
- ``label_items``: ``item`` (0-based), ``prompt``, ``responses`` (JSON list), ``extra`` (JSON object: the
  candidate row's other columns), ``known_ranks`` (JSON list for a check item; NULL for a prompt to label)
- ``label_answers``: one row per (``labeler``, ``item``): ``action`` (rank | skip | flag), ``ranks`` (JSON
  list, rank answers only), ``note``, ``given_at`` (UTC, ISO 8601), ``elapsed_ms`` (time spent, when the page
  sent it), ``revision`` (answers given to this item by this labeler), ``seq`` (order answers were last given)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rewardlab.contracts.schema import DataError

LAYOUT_VERSION = "1"
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_URL_SCHEMES = ("sqlite://", "postgresql://", "postgresql+", "postgres://")


def _tables():
    import sqlalchemy as sa

    md = sa.MetaData()
    meta = sa.Table("label_meta", md, sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.Text, nullable=False))
    items = sa.Table("label_items", md, sa.Column("item", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("prompt", sa.Text, nullable=False), sa.Column("responses", sa.Text, nullable=False),
                     sa.Column("extra", sa.Text, nullable=False), sa.Column("known_ranks", sa.Text))
    answers = sa.Table(
        "label_answers", md,
        sa.Column("labeler", sa.String(200), primary_key=True),
        sa.Column("item", sa.Integer, sa.ForeignKey("label_items.item"), primary_key=True, autoincrement=False),
        sa.Column("action", sa.String(8), nullable=False), sa.Column("ranks", sa.Text),
        sa.Column("note", sa.Text, nullable=False), sa.Column("given_at", sa.String(40), nullable=False),
        sa.Column("elapsed_ms", sa.Integer), sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False))
    return md, meta, items, answers


class Tables:
    """The store's SQLAlchemy tables, built on first use (SQLAlchemy is imported only when a store is opened)."""

    def __init__(self):
        self.metadata, self.meta, self.items, self.answers = _tables()


_TABLES: Tables | None = None


def tables() -> Tables:
    global _TABLES
    if _TABLES is None:
        _TABLES = Tables()
    return _TABLES


def store_url(source: str | Path) -> str | None:
    """The database URL ``source`` names, or None when it names no store.

    ``sqlite:PATH``, a path ending in .sqlite / .sqlite3 / .db, or a SQLAlchemy URL (``sqlite:///PATH``,
    ``postgresql://user@host/db``)."""
    text = str(source)
    if text.startswith("postgres://"):  # the short scheme some hosts print; SQLAlchemy knows the long one
        return "postgresql://" + text[len("postgres://"):]
    if text.startswith(_URL_SCHEMES):
        return text
    if text.startswith("sqlite:"):
        return f"sqlite:///{Path(text[len('sqlite:'):]).resolve()}"
    if text.lower().endswith(STORE_SUFFIXES):
        return f"sqlite:///{Path(text).resolve()}"
    return None


def _sqlite_connect(dbapi_connection, _record) -> None:
    # The driver's own transaction handling is switched off so that BEGIN (below) is ours: a writer takes the
    # write lock at BEGIN IMMEDIATE and waits up to the busy timeout for it, instead of failing half-way.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = FULL")  # a committed answer survives a power cut, not only a crash
    cur.close()


def _sqlite_connect_reader(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA busy_timeout = 30000")


def _sqlite_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("label_write") else "BEGIN")


def open_engine(url: str, *, read_only: bool = False):
    """A SQLAlchemy engine on the store at ``url``; SQLite gets WAL mode, a busy timeout and real transactions.

    Open write transactions with ``engine.execution_options(label_write=True).begin()``."""
    import sqlalchemy as sa

    if url.startswith("sqlite:"):
        path = Path(url.split(":///", 1)[1])
        if read_only:
            if not path.is_file():
                raise DataError(str(path), None, "file does not exist")
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_connect_reader if read_only else _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except (ImportError, sa.exc.ArgumentError) as err:
        raise ValueError(f"cannot open the label store {url}: {err} (PostgreSQL needs psycopg: "
                         "pip install 'psycopg[binary]')") from None


def export_rows(conn) -> list[dict]:
    """Every ranking in the store, in the order given, as rows of the ``rankings`` data format."""
    t = tables()
    query = (t.answers.select().with_only_columns(t.answers.c.labeler, t.answers.c.item, t.answers.c.ranks,
                                                  t.items.c.prompt, t.items.c.responses, t.items.c.extra)
             .join_from(t.answers, t.items, t.answers.c.item == t.items.c.item)
             .where(t.answers.c.action == "rank", t.items.c.known_ranks.is_(None))
             .order_by(t.answers.c.seq, t.answers.c.labeler, t.answers.c.item))
    return [{"prompt": r.prompt, "responses": json.loads(r.responses), "ranks": json.loads(r.ranks),
             "labeler": r.labeler, "item": r.item, **json.loads(r.extra)} for r in conn.execute(query)]


def read_store_rows(source: str) -> Iterator[tuple[str, dict]]:
    """``(location, row)`` for each ranking in the label store ``source`` (see :func:`store_url`)."""
    import sqlalchemy as sa

    url = store_url(source)
    assert url is not None, source
    engine = open_engine(url, read_only=True)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("label_answers"):
                raise DataError(str(source), None, "not a rewardlab label store (no label_answers table); "
                                "stores are written by `rewardlab label --out FILE.sqlite`")
            rows = export_rows(conn)
    except sa.exc.DatabaseError as err:
        raise DataError(str(source), None, f"cannot read the label store ({err.orig})") from None
    finally:
        engine.dispose()
    for row in rows:
        yield f"{source}:labeler {row['labeler']!r} item {row['item']}", row
