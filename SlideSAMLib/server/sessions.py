"""The server's session store: one engine `Session` per uploaded volume, expiry, and a global embedding budget.

All sessions share one `EmbeddingCache`, so the bound on cached embeddings holds across
sessions and eviction is oldest-first over all of them (the cache is an LRU on windows: a
session not used for a while loses its embeddings before an active one does).  A session
evicted from the cache still works: the engine re-encodes the windows it needs.
"""
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from ..cache import EmbeddingCache
from ..checkpoint import SlideSAMModel
from ..session import Session


class StoreError(Exception):
    """A request about a session that cannot be served; `status` is the HTTP status to answer with."""

    status = 400


class SessionNotFound(StoreError):
    status = 404


class SessionExpired(StoreError):
    status = 410


class ServerFull(StoreError):
    status = 503


class SharedEmbeddingCache(EmbeddingCache):
    """The engine's byte-accounted LRU cache, plus per-session accounting and removal on close.

    Engine keys are ((session's cache owner, weights, axis), window); a closed session's windows are dropped at
    once, so that the budget goes to the sessions still open.
    """

    @staticmethod
    def _owner(key) -> object:
        return key[0][0]

    def drop_owner(self, owner) -> int:
        with self._lock:
            doomed = [k for k in self._items if self._owner(k) == owner]
            for k in doomed:
                value = self._items.pop(k)
                self._bytes -= value.numel() * value.element_size()
        return len(doomed)

    def bytes_of(self, owner) -> int:
        with self._lock:
            return sum(v.numel() * v.element_size() for k, v in self._items.items() if self._owner(k) == owner)


@dataclass
class Job:
    id: str
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class SessionEntry:
    id: str
    key: int  # the engine session's cache owner (`Session.cache_owner`: unique in the process, unlike id())
    session: Session
    geometry: dict
    created: float
    last_used: float
    jobs: Dict[str, Job] = field(default_factory=dict)

    def describe(self, cache: SharedEmbeddingCache, now: float, ttl: float) -> dict:
        return {
            "session": self.id,
            "shape_kji": list(self.session.volume.shape),
            "dtype": self.session.volume.dtype.str,
            "modality": self.session.modality,
            "modality_reason": self.session.modality_reason,
            **self.geometry,
            "cached_bytes": cache.bytes_of(self.key),
            "encoder_passes": self.session.encoder_passes,
            "running_jobs": list(self.jobs),
            "expires_in_s": None if self.jobs else round(max(0.0, ttl - (now - self.last_used)), 1),
        }


class SessionStore:
    def __init__(
        self,
        model: SlideSAMModel,
        ttl_s: float = 3600.0,
        cache_bytes: int = 2 << 30,
        max_sessions: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.model = model
        self.ttl_s = float(ttl_s)
        self.cache = SharedEmbeddingCache(cache_bytes)
        self.max_sessions = int(max_sessions)
        self.clock = clock
        self._entries: "OrderedDict[str, SessionEntry]" = OrderedDict()
        self._expired: "OrderedDict[str, float]" = OrderedDict()  # recently expired ids, to answer 410 not 404
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: Optional[threading.Thread] = None

    # -- life cycle ----------------------------------------------------------------
    def create(self, volume: np.ndarray, geometry: dict, modality: str = "auto") -> SessionEntry:
        self.sweep()
        with self._lock:
            if len(self._entries) >= self.max_sessions:
                raise ServerFull(
                    f"the server holds its maximum of {self.max_sessions} sessions: close unused sessions or wait {self.ttl_s:g} s for idle ones to expire"
                )
        # Normalising the volume is the costly part: outside the store lock.
        session = Session(self.model, volume, modality=modality, cache=self.cache, spacing=geometry.get("spacing"))
        now = self.clock()
        entry = SessionEntry(id=secrets.token_urlsafe(12), key=session.cache_owner, session=session, geometry=geometry, created=now, last_used=now)
        with self._lock:
            self._entries[entry.id] = entry
        return entry

    def get(self, session_id: str) -> SessionEntry:
        self.sweep()
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                if session_id in self._expired:
                    raise SessionExpired(
                        f"session {session_id} expired after {self.ttl_s:g} s without use: upload the volume again"
                    )
                raise SessionNotFound(f"no session {session_id} on this server (it was closed, or the server restarted): upload the volume again")
            entry.last_used = self.clock()
            self._entries.move_to_end(session_id)
            return entry

    def close(self, session_id: str) -> None:
        with self._lock:
            entry = self._entries.pop(session_id, None)
        if entry is None:
            self.get(session_id)  # raises the right "not found" / "expired" error
            return
        self._retire(entry)

    def _retire(self, entry: SessionEntry) -> None:
        for job in list(entry.jobs.values()):
            job.cancel.set()
        self.cache.drop_owner(entry.key)

    def sweep(self) -> int:
        """Expire sessions idle for longer than the TTL (never one with a running job)."""
        now = self.clock()
        with self._lock:
            stale = [e for e in self._entries.values() if not e.jobs and now - e.last_used > self.ttl_s]
            for e in stale:
                del self._entries[e.id]
                self._expired[e.id] = now
            while len(self._expired) > 10000:
                self._expired.popitem(last=False)
        for e in stale:
            self._retire(e)
        return len(stale)

    # -- jobs ------------------------------------------------------------------------
    def start_job(self, entry: SessionEntry) -> Job:
        job = Job(id=secrets.token_urlsafe(8))
        with self._lock:
            entry.jobs[job.id] = job
            entry.last_used = self.clock()
        return job

    def end_job(self, entry: SessionEntry, job: Job) -> None:
        with self._lock:
            entry.jobs.pop(job.id, None)
            entry.last_used = self.clock()
            retired = self._entries.get(entry.id) is not entry
        if retired:
            # A job cancelled by close/expiry may have cached its last window after the drop.
            self.cache.drop_owner(entry.key)

    def cancel(self, entry: SessionEntry, job_id: Optional[str] = None) -> list:
        with self._lock:
            jobs = [j for j in entry.jobs.values() if job_id in (None, j.id)]
        for j in jobs:
            j.cancel.set()
        return [j.id for j in jobs]

    # -- reporting and the reaper -----------------------------------------------------
    def describe(self, entry: SessionEntry) -> dict:
        return entry.describe(self.cache, self.clock(), self.ttl_s)

    def stats(self) -> dict:
        with self._lock:
            n, running = len(self._entries), sum(len(e.jobs) for e in self._entries.values())
        return {
            "sessions": n,
            "max_sessions": self.max_sessions,
            "running_jobs": running,
            "session_ttl_s": self.ttl_s,
            "cache_bytes": self.cache.nbytes,
            "cache_limit_bytes": self.cache.max_bytes,
            "cached_windows": len(self.cache),
        }

    def start_reaper(self) -> None:
        interval = max(0.5, min(30.0, self.ttl_s / 4))

        def loop():
            while not self._stop.wait(interval):
                self.sweep()

        self._reaper = threading.Thread(target=loop, name="slidesam-session-reaper", daemon=True)
        self._reaper.start()

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for e in entries:
            self._retire(e)
