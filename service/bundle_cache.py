"""A bounded LRU of loaded inference bundles, keyed by the bundle file's identity so a
rewritten bundle is reloaded, never served stale.

A request resolves its `LoadedBundle` once and keeps that object to the end: promoting another
job or evicting the cache entry never changes the network under a request in flight.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

import models
from core.errors import Conflict
from core.servable import ServableModel


@dataclass(frozen=True)
class BundleKey:
    """A bundle file's identity: a rewrite (new inode, mtime or size) makes a new key."""

    path: str
    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path) -> BundleKey:
        stat = path.stat()
        return cls(str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True, eq=False)
class LoadedBundle:
    key: BundleKey
    bundle: models.Bundle


class BundleCache:
    """Bounded LRU of loaded bundles. Blocking: call it from a worker thread."""

    def __init__(self, capacity: int, dtype: torch.dtype = torch.float32) -> None:
        self.capacity = capacity
        self.dtype = dtype
        self._entries: OrderedDict[BundleKey, LoadedBundle] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[BundleKey, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model: ServableModel) -> LoadedBundle:
        """The loaded bundle of `model`; 409 naming the job if it cannot be loaded."""
        try:
            key = BundleKey.of(Path(model.bundle.path))
            return self._cached(key) or self._load_once(key)
        except (models.BundleError, OSError) as exc:
            raise Conflict(
                f"the model of job {model.job.id} cannot be loaded ({exc}); retrain it or "
                "promote another job",
                "job_id",
            ) from None

    def _cached(self, key: BundleKey) -> LoadedBundle | None:
        with self._lock:
            loaded = self._entries.get(key)
            if loaded is not None:
                self._entries.move_to_end(key)
            return loaded

    def _load_once(self, key: BundleKey) -> LoadedBundle:
        # One loader per key: concurrent requests for a cold bundle wait for one load,
        # while requests for other (cached) bundles are not held up.
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        try:
            with key_lock:
                loaded = self._cached(key)
                if loaded is None:
                    loaded = LoadedBundle(key, load_for_inference(key.path, self.dtype))
                    self._insert(loaded)
                return loaded
        finally:
            with self._lock:
                self._loading.pop(key, None)

    def _insert(self, loaded: LoadedBundle) -> None:
        with self._lock:
            # A rewritten file replaces its previous version instead of waiting for eviction.
            for stale in [k for k in self._entries if k.path == loaded.key.path]:
                del self._entries[stale]
            self._entries[loaded.key] = loaded
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def load_for_inference(path: str, dtype: torch.dtype) -> models.Bundle:
    """The bundle, its model on the CPU in `dtype` and channels-last layout."""
    bundle = models.load_bundle(path, map_location="cpu")
    bundle.model = models.prepare_for_inference(bundle.model, dtype)
    return bundle
