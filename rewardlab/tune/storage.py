"""Where a study lives: a SQLAlchemy database or Optuna's journal file, with heartbeats for dead workers."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import (
    BaseHeartbeat,  # the interface RDBStorage implements; no public name
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

HEARTBEAT_ATTR = "rewardlab:heartbeat"  # trial system attribute: time of the last heartbeat


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat RDBStorage has, kept as a trial system attribute."""

    def __init__(self, path: str, *, heartbeat_interval: int, grace_period: int, stale_callback=None):
        super().__init__(JournalFileBackend(path))
        self._interval, self._grace, self._stale_callback = heartbeat_interval, grace_period, stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished (or failed as stale by another worker) between two beats

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - max(t.system_attrs.get(HEARTBEAT_ATTR, 0.0), t.datetime_start.timestamp()) > self._grace]

    def get_heartbeat_interval(self) -> int:
        return self._interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback


def open_storage(spec: str | None, out: Path, heartbeat: int = 60):
    """A storage from ``--storage``: a SQLAlchemy URL, ``journal:PATH`` / ``PATH.journal``, or the default
    ``sqlite:///<out>/study.db``. Trials of dead workers are failed after 2 heartbeats and retried."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
    if spec is None:
        out.mkdir(parents=True, exist_ok=True)
        spec = f"sqlite:///{out / 'study.db'}"
    if spec.startswith("journal:") or spec.endswith((".journal", ".log")):
        path = Path(spec.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ValueError(f"--storage {spec}: folder {path.parent} does not exist (on every worker, the "
                             "journal must be one file on a shared file system)")
        return JournalHeartbeatStorage(str(path), heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                                       stale_callback=retry)
    if "://" not in spec:
        raise ValueError(f"--storage {spec}: give a SQLAlchemy URL (sqlite:///study.db, "
                         "postgresql://user:password@host/db, mysql+pymysql://...) or a journal file "
                         "(journal:PATH or PATH.journal)")
    return _database_storage(spec, heartbeat, retry)


def _database_storage(spec: str, heartbeat: int, retry) -> RDBStorage:
    import sqlalchemy

    url = sqlalchemy.engine.make_url(spec)
    kwargs = {"pool_pre_ping": True}
    if url.get_backend_name() in ("postgresql", "mysql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        for attempt in range(5):
            try:
                return RDBStorage(spec, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                  grace_period=2 * heartbeat, heartbeat_stale_trial_callback=retry)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == 4:  # workers starting together race to create Optuna's tables; the loser retries
                    raise
                time.sleep(0.5 + attempt)
    except ImportError as err:  # Optuna's message names no module; its cause does
        raise ValueError(f"cannot open study storage {url.render_as_string(hide_password=True)}: no database "
                         f"driver ({err.__cause__ or err}); install it, e.g. pip install 'psycopg[binary]' "
                         "for PostgreSQL or pymysql for MySQL") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise ValueError(f"cannot open study storage {url.render_as_string(hide_password=True)}: "
                         f"{type(err).__name__}: {reason}") from None
