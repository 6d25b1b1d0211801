"""Loaded detectors kept per (model, precision), bounded, least recently used evicted; loading is thread-safe."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from appliance.inference.pipeline import Detector

logger = logging.getLogger(__name__)


class ModelCache:
    """An LRU of Detectors. Two threads asking for the same missing entry load it once; different entries
    load in parallel (a per-key lock, not one global lock held while loading)."""

    def __init__(self, max_size: int = 4) -> None:
        self.max_size = max(1, int(max_size))
        self._entries: OrderedDict[Hashable, Detector] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self.loads = 0
        self.evictions = 0

    @staticmethod
    def make_key(model: Any, precision: str | None, version: Hashable = None) -> Hashable:
        return (str(model), precision or "auto", version)

    def get(
        self,
        model: Any,
        precision: str | None,
        loader: Callable[[], Detector],
        version: Hashable = None,
    ) -> Detector:
        """The cached detector for (model, precision, version), loading it with `loader` when missing.

        `version` (e.g. the artifact's mtime) makes a re-exported file load fresh instead of the stale entry.
        """
        key = self.make_key(model, precision, version)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                found = self._entries.get(key)
                if found is not None:
                    self._entries.move_to_end(key)
                    return found
            try:
                detector = loader()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            evicted: list[Detector] = []
            with self._lock:
                self.loads += 1
                # Older versions of the same model and precision are dead weight once a new one loads.
                for old in [k for k in self._entries if k[:2] == key[:2] and k != key]:  # type: ignore[index]
                    evicted.append(self._entries.pop(old))
                self._entries[key] = detector
                while len(self._entries) > self.max_size:
                    _, victim = self._entries.popitem(last=False)
                    evicted.append(victim)
                    self.evictions += 1
            for victim in evicted:
                try:
                    victim.close()
                except Exception:
                    logger.exception("closing an evicted detector failed")
            return detector

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), OrderedDict()
        for detector in entries:
            detector.close()
