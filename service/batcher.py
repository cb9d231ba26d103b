"""Batched inference: one pass at a time per runner thread; requests that arrive while the
runners are busy share the next pass, so concurrent clients get batching with no added wait
when the server is idle.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

import models
from service.bundle_cache import LoadedBundle

TopK = list[list[tuple[str, float]]]  # per image: (class name, probability), best first


@dataclass(eq=False)
class _Work:
    loaded: LoadedBundle
    pixels: torch.Tensor
    top_k: int
    result: Future[TopK] = field(default_factory=Future)


class InferenceBatcher:
    """Runs forward passes on `runners` threads; work queued meanwhile for one model is batched.

    There is no gathering window: an idle runner starts at once (no added latency for a lone
    request), and a busy batcher collects whatever arrived during the passes in progress.
    Two runners by default: a second pass at the same time fills the gaps one pass leaves in
    the cores' use (its serial parts, the joins between parallel ops); docs/serving.md has the
    figures.
    """

    def __init__(self, max_batch_images: int = 64, runners: int = 2) -> None:
        self.max_batch_images = max_batch_images
        self.runners = runners
        self._pending: deque[_Work] = deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []

    def submit(self, loaded: LoadedBundle, pixels: torch.Tensor, top_k: int) -> Future[TopK]:
        work = _Work(loaded, pixels, top_k)
        with self._ready:
            if not self._threads:
                self._start_runners()
            self._pending.append(work)
            self._ready.notify()
        return work.result

    def _start_runners(self) -> None:
        for index in range(self.runners):
            thread = threading.Thread(
                target=self._run, name=f"foodlab-inference-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                results = run_forward(batch)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for work in batch:
                    work.result.set_exception(exc)
                continue
            for work, result in zip(batch, results, strict=True):
                work.result.set_result(result)

    def _next_batch(self) -> list[_Work]:
        with self._ready:
            while not self._pending:
                self._ready.wait()
            batch = [self._pending.popleft()]
            images = len(batch[0].pixels)
            while (
                self._pending
                and self._pending[0].loaded is batch[0].loaded
                and images + len(self._pending[0].pixels) <= self.max_batch_images
            ):
                work = self._pending.popleft()
                batch.append(work)
                images += len(work.pixels)
            return batch


def run_forward(batch: list[_Work]) -> list[TopK]:
    """One forward pass over every request's images; each request gets its own top-k."""
    bundle = batch[0].loaded.bundle
    pixels = torch.cat([work.pixels for work in batch])
    per_request = models.probabilities(bundle.model, pixels).split(
        [len(work.pixels) for work in batch]
    )
    return [
        models.top_k(probs, work.top_k, bundle.class_names)
        for work, probs in zip(batch, per_request, strict=True)
    ]
