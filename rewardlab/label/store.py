"""The label store: candidates and every labeler's answers in a database, each answer committed as it is given.

SQLite (a file in WAL mode, the default) or PostgreSQL (a URL, for a team on several machines), one code path
through SQLAlchemy Core; the tables are :mod:`rewardlab.data.label_tables`. Each answer is one transaction,
an upsert of the (labeler, item) row: several labelers through one server, or several servers on one store,
never lose or overwrite each other's answers, and a killed server loses nothing it had confirmed. Every
answer records the labeler, when it was given (UTC) and, when the page sends it, the time spent.

The store holds its candidates (and known-answer check items) and their fingerprint, so it is never mixed
with other candidates. ``rewardlab label --export FILE`` writes the rankings file ``rewardlab train`` reads;
``train`` also reads the store itself. A ``.jsonl`` ``--out`` is the older form: see
:mod:`rewardlab.label.legacy`.

Progress counts what a labeler has *answered* (ranked or flagged); skipped prompts are counted apart, stay
remaining, and come back once nothing else is left.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from rewardlab.data.label_tables import (
    LAYOUT_VERSION,
    export_rows,
    open_engine,
    store_url,
    tables,
)
from rewardlab.label import legacy
from rewardlab.label.candidates import (
    Candidate,
    check_ranks,
    display_order,
    fingerprint,
    read_candidates,
)
from rewardlab.label.queue import Assignment, labeler_queue, pick_next, previous_in

ACTIONS = ("rank", "skip", "flag")
ANSWERED = ("rank", "flag")  # what counts as answered; a skip does not
MAX_ELAPSED_MS = 86_400_000  # time spent is capped at a day (a page left open overnight)
MAX_NOTE, MAX_NAME = 4000, 200


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_store(candidates: str | Path) -> Path:
    """The store beside a candidates file: ``cands.jsonl`` -> ``cands.labels.sqlite``."""
    path = Path(candidates)
    return path.with_name(f"{Path(path.name.removesuffix('.gz')).stem}.labels.sqlite")


def check_elapsed(elapsed_ms: object) -> int | None:
    """Time spent on an answer in milliseconds (optional): a number >= 0, capped at a day."""
    if elapsed_ms is None:
        return None
    if isinstance(elapsed_ms, bool) or not isinstance(elapsed_ms, (int, float)) or not math.isfinite(elapsed_ms) \
            or elapsed_ms < 0:
        raise ValueError(f"elapsed_ms {elapsed_ms!r:.40} must be a number of milliseconds >= 0 (or left out)")
    return min(round(elapsed_ms), MAX_ELAPSED_MS)


class LabelStore:
    """Candidates plus every labeler's answers in a database; safe to share between threads and processes.

    Args:
        candidates: the candidates file (``rewardlab generate``'s rows); may be None for an existing store.
        out: a ``.sqlite`` file, a PostgreSQL URL, or a ``.jsonl`` rankings file (the store is then the
            ``.sqlite`` beside it; see :mod:`rewardlab.label.legacy`). Default: beside the candidates.
        checks: a file of known-answer check items (``prompt``, ``responses``, ``ranks``).
        assignment: who sees which prompt, in what order (:class:`~rewardlab.label.queue.Assignment`).
    """

    def __init__(self, candidates: str | Path | None, out: str | Path | None = None, *,
                 checks: str | Path | None = None, assignment: Assignment | None = None):
        if candidates is None and out is None:
            raise ValueError("name the candidates (--data) or an existing store (--out)")
        self.candidates_path = Path(candidates) if candidates is not None else None
        self.assignment = assignment or Assignment()
        self.out = str(out) if out is not None else str(default_store(candidates))
        self.mirror = Path(self.out) if self.out.endswith(".jsonl") else None
        self.location = str(Path(self.out).with_suffix(".sqlite")) if self.mirror else self.out
        url = store_url(self.location)
        if url is None:
            raise ValueError(f"--out {self.out}: name a store: a .sqlite file, a PostgreSQL URL "
                             "(postgresql://user@host/db), or a .jsonl rankings file (kept beside a .sqlite store)")
        self.sidecar = legacy.sidecar_of(self.mirror) if self.mirror else None
        self._t = tables()
        self._engine = open_engine(url)
        self._writer = self._engine.execution_options(label_write=True)
        given = read_candidates(candidates) if candidates is not None else None  # before touching the store
        self._create_tables()
        self.candidates, self.checks = self._claim(given, checks)
        self._by_item = {c.index: c for c in self.candidates + self.checks}
        self.order: list[int] | None = None  # the prompts' order under --select (None: file order / shuffle)

    # ------------------------------------------------------------------ opening

    def _create_tables(self) -> None:
        for attempt in range(3):  # two servers creating a new store at once: the second finds the tables
            try:
                with self._writer.begin() as conn:
                    self._t.metadata.create_all(conn)
                return
            except sa.exc.DatabaseError as err:
                if attempt == 2 or not sa.inspect(self._engine).has_table("label_answers"):
                    raise ValueError(f"cannot open the label store {self.location}: {err.orig}") from None

    def _stored_items(self, conn) -> list[Candidate]:
        return [Candidate(r.item, r.prompt, tuple(json.loads(r.responses)), json.loads(r.extra),
                          tuple(json.loads(r.known_ranks)) if r.known_ranks else None)
                for r in conn.execute(self._t.items.select().order_by(self._t.items.c.item))]

    def _claim(self, given: list[Candidate] | None, checks: str | Path | None):
        """The store's prompts and check items: taken from the database, or written into a new one."""
        with self._writer.begin() as conn:
            meta = dict(conn.execute(sa.select(self._t.meta.c.key, self._t.meta.c.value)).all())
            if not meta:
                if given is None:
                    raise ValueError(f"{self.location} is not a label store yet; name the candidates with --data")
                self._insert_items(conn, given, {"layout": LAYOUT_VERSION, "fingerprint": fingerprint(given),
                                                 "candidates": str(self.candidates_path), "prompts": str(len(given))})
                if self.mirror is not None:
                    self._import_legacy(conn, given)
                meta = {"fingerprint": fingerprint(given), "prompts": str(len(given))}
            elif given is not None and meta["fingerprint"] != fingerprint(given):
                raise ValueError(f"{self.location} does not belong to these candidates ({self.candidates_path}): it "
                                 f"holds {meta['prompts']} other prompts from {meta.get('candidates')}; "
                                 "label into a new --out")
            stored = self._stored_items(conn)
            prompts = [c for c in stored if c.known_ranks is None]
            known = [c for c in stored if c.known_ranks is not None]
            if checks is not None:
                new = read_candidates(checks, checks=True, start=len(prompts))
                if not known:
                    self._insert_items(conn, new, {"checks": str(checks)})
                    known = new
                elif fingerprint(known) != fingerprint(new):
                    raise ValueError(f"{self.location} has other check items (from {meta.get('checks')}); "
                                     "use the same --checks file, or label into a new --out")
        return prompts, known

    def _insert_items(self, conn, items: list[Candidate], meta: dict) -> None:
        conn.execute(self._t.items.insert(), [
            {"item": c.index, "prompt": c.prompt, "responses": json.dumps(list(c.responses), ensure_ascii=False),
             "extra": json.dumps(c.extra, ensure_ascii=False),
             "known_ranks": json.dumps(list(c.known_ranks)) if c.known_ranks else None} for c in items])
        conn.execute(self._t.meta.insert(), [{"key": k, "value": v} for k, v in meta.items()])

    def _import_legacy(self, conn, given: list[Candidate]) -> None:
        """Answers an earlier version wrote to this ``.jsonl`` --out (and its sidecar), imported once."""
        found = legacy.legacy_answers(self.mirror, given)
        if not found:
            return
        when = datetime.fromtimestamp(self.mirror.stat().st_mtime if self.mirror.exists() else 0,
                                      timezone.utc).isoformat(timespec="milliseconds")
        latest = {(a["labeler"], a["item"]): a for a in found}  # a later row for the same answer wins
        conn.execute(self._t.answers.insert(), [
            {**a, "ranks": json.dumps(a["ranks"]) if a["ranks"] else None, "given_at": when, "elapsed_ms": None,
             "revision": 1, "seq": seq} for seq, a in enumerate(latest.values(), 1)])
        conn.execute(self._t.meta.insert(), [{"key": "imported", "value": str(self.mirror)}])

    def close(self) -> None:
        self._engine.dispose()

    # ------------------------------------------------------------------ reading

    def candidate(self, item: int) -> Candidate:
        if isinstance(item, bool) or not isinstance(item, int) or item not in self._by_item:
            raise ValueError(f"item {item!r} does not exist; there are {len(self.candidates)}"
                             + (f" (and {len(self.checks)} check items)" if self.checks else ""))
        return self._by_item[item]

    def _answers(self, where) -> list:
        a = self._t.answers.c
        with self._engine.connect() as conn:
            return conn.execute(sa.select(a.labeler, a.item, a.action, a.ranks, a.note, a.given_at, a.elapsed_ms,
                                          a.revision).where(where).order_by(a.seq)).all()

    @staticmethod
    def _answer_dict(r) -> dict:
        return {"labeler": r.labeler, "item": r.item, "action": r.action,
                "ranks": json.loads(r.ranks) if r.ranks else None, "note": r.note, "given_at": r.given_at,
                "elapsed_ms": r.elapsed_ms, "revision": r.revision}

    def answers(self, labeler: str | None = None) -> list[dict]:
        """Every answer (or one labeler's), in the order last given: labeler, item, action, ranks, note,
        given_at, elapsed_ms, revision."""
        where = self._t.answers.c.labeler == labeler if labeler is not None else sa.true()
        return [self._answer_dict(r) for r in self._answers(where)]

    def answer_of(self, labeler: str, item: int) -> dict | None:
        a = self._t.answers.c
        rows = self._answers((a.labeler == labeler) & (a.item == item))
        return self._answer_dict(rows[0]) if rows else None

    def ranked_rows(self, labeler: str) -> list[dict]:
        """This labeler's saved rankings (``item`` and ``ranks``, check items included)."""
        return [a for a in self.answers(labeler) if a["action"] == "rank"]

    def queue(self, labeler: str) -> list[int]:
        return labeler_queue(labeler, len(self.candidates), [c.index for c in self.checks], self.assignment,
                             self.order)

    def _state(self, labeler: str) -> tuple[list[int], dict[int, str], set[int]]:
        """The labeler's queue, their action per item, and the items enough others answered (``--per-prompt``)."""
        mine = {a["item"]: a["action"] for a in self.answers(labeler)}
        full: set[int] = set()
        if self.assignment.per_prompt is not None:
            a = self._t.answers.c
            query = (sa.select(a.item).where(a.labeler != labeler, a.action.in_(ANSWERED),
                                             a.item < len(self.candidates))
                     .group_by(a.item).having(sa.func.count() >= self.assignment.per_prompt))
            with self._engine.connect() as conn:
                full = {i for (i,) in conn.execute(query)} - {i for i, act in mine.items() if act in ANSWERED}
        return self.queue(labeler), mine, full

    def progress(self, labeler: str) -> dict:
        """``total`` (prompts this labeler is to answer), ``answered`` (ranked + flagged), ``ranked``,
        ``skipped`` (skipped and not answered since: still remaining), ``flagged``, ``remaining``."""
        queue, mine, full = self._state(labeler)
        counts = {action: sum(1 for i in queue if mine.get(i) == action) for action in ACTIONS}
        total = sum(1 for i in queue if i not in full or mine.get(i) in ANSWERED)
        skipped = sum(1 for i in queue if mine.get(i) == "skip" and i not in full)
        answered = counts["rank"] + counts["flag"]
        return {"total": total, "answered": answered, "ranked": counts["rank"], "skipped": skipped,
                "flagged": counts["flag"], "remaining": total - answered}

    def next_step(self, labeler: str, after: int = -1, *, revisit: bool = True) -> dict:
        """``{"item", "revisit", "last"}``: the next item for this labeler (None when nothing is left),
        whether it is one they skipped before, and the last item of their queue."""
        queue, mine, full = self._state(labeler)
        item, again = pick_next(queue, after, answered={i for i, act in mine.items() if act in ANSWERED},
                                skipped={i for i, act in mine.items() if act == "skip"}, full=full, revisit=revisit)
        return {"item": item, "revisit": again, "last": queue[-1] if queue else None}

    def next_item(self, labeler: str, after: int = -1, *, revisit: bool = True) -> int | None:
        """The first item after ``after`` in this labeler's queue they have not answered (then skipped ones)."""
        return self.next_step(labeler, after, revisit=revisit)["item"]

    def item(self, labeler: str, index: int) -> dict:
        """An item as the page shows it: prompt, responses, the row's other columns (``extra``: ``truncated``
        from ``rewardlab generate``), display order, this labeler's answer if any, its position in their queue
        and the item before it. A check item does not say it is one."""
        c = self.candidate(index)
        queue = self.queue(labeler)
        return {"item": index, "prompt": c.prompt, "responses": list(c.responses), "extra": c.extra,
                "order": display_order(labeler, index, len(c.responses)), "answer": self.answer_of(labeler, index),
                "position": queue.index(index) + 1 if index in queue else None, "queue_length": len(queue),
                "prev": previous_in(queue, index)}

    def rankings(self) -> dict[int, dict[str, list[int]]]:
        """``{item: {labeler: ranks}}`` over the prompts to label (check items left out)."""
        out: dict[int, dict[str, list[int]]] = {}
        for a in self.answers():
            if a["action"] == "rank" and self._by_item[a["item"]].known_ranks is None:
                out.setdefault(a["item"], {})[a["labeler"]] = a["ranks"]
        return out

    def export_rows(self) -> list[dict]:
        """Every ranking as a row of the ``rankings`` data format (what ``--export`` writes)."""
        with self._engine.connect() as conn:
            return export_rows(conn)

    def export(self, path: str | Path) -> int:
        """Write the rankings file ``rewardlab train`` reads; returns the number of rows."""
        with legacy.export_lock(Path(path)):
            rows = self.export_rows()
            legacy.write_atomically(Path(path), rows)
        return len(rows)

    # ------------------------------------------------------------------ writing

    def answer(self, labeler: str, index: int, action: str, ranks: list | None = None, note: str = "", *,
               elapsed_ms: float | None = None) -> dict:
        """Save one answer (replacing this labeler's earlier answer to the item) in one transaction; returns it."""
        if not isinstance(labeler, str) or not labeler.strip() or len(labeler.strip()) > MAX_NAME:
            raise ValueError(f"labeler must be a non-empty name of at most {MAX_NAME} characters, got {labeler!r:.40}")
        labeler = labeler.strip()
        if action not in ACTIONS:
            raise ValueError(f"action {action!r} is not valid; choose one of {', '.join(ACTIONS)}")
        c = self.candidate(index)
        ranks = check_ranks(ranks, len(c.responses)) if action == "rank" else None
        if note is not None and not isinstance(note, str) or len(note or "") > MAX_NOTE:
            raise ValueError(f"note must be text of at most {MAX_NOTE} characters")
        values = {"action": action, "ranks": json.dumps(ranks) if ranks else None, "note": note or "",
                  "given_at": _now(), "elapsed_ms": check_elapsed(elapsed_ms)}
        a = self._t.answers
        with self._writer.begin() as conn:
            values["seq"] = conn.execute(sa.select(sa.func.coalesce(sa.func.max(a.c.seq), 0))).scalar() + 1
            insert = self._insert(a).values(labeler=labeler, item=index, revision=1, **values)
            conn.execute(insert.on_conflict_do_update(index_elements=[a.c.labeler, a.c.item],
                                                      set_={**values, "revision": a.c.revision + 1}))
        if self.mirror is not None:
            self._write_mirror()
        return self.answer_of(labeler, index)

    def _insert(self, table):
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _write_mirror(self) -> None:
        with legacy.export_lock(self.mirror):
            set_aside = [{"prompt": self._by_item[a["item"]].prompt, "item": a["item"], "labeler": a["labeler"],
                          "action": a["action"], "note": a["note"]}
                         for a in self.answers() if a["action"] != "rank"]
            legacy.write_mirror(self.mirror, self.export_rows(), set_aside)
