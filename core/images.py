"""How large an image may be before anything decodes it: one rule for uploads, registered
datasets and the training image cache.

Checked on the header alone (Pillow reads sizes without decoding pixels), so a 400,000 x 1 PNG
or a 40-megapixel image per file of a batch costs nothing before it is refused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from core.settings import Settings


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_side: int
    max_aspect_ratio: float

    @classmethod
    def of(cls, settings: Settings) -> ImageLimits:
        return cls(settings.max_image_pixels, settings.max_image_side, settings.max_aspect_ratio)

    def problem(self, width: int, height: int) -> str | None:
        """Why an image of this size is refused, or None when it may be decoded."""
        if width < 1 or height < 1:
            return f"{width}x{height} has no pixels"
        if max(width, height) > self.max_side:
            return f"{width}x{height}: a side is longer than {self.max_side} pixels"
        if max(width, height) / min(width, height) > self.max_aspect_ratio:
            # Resizing the shorter side to the model's size would blow the longer one up.
            return f"{width}x{height}: sides differ by more than {self.max_aspect_ratio:g}:1"
        if width * height > self.max_pixels:
            return f"{width}x{height} is {width * height} pixels; at most {self.max_pixels}"
        return None


_decode_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def decode_slots(count: int) -> threading.BoundedSemaphore:
    """A process-wide semaphore of `count` slots: how many decodes may run at once, so that
    memory holds a known number of full-size images whatever the number of clients."""
    with _slots_lock:
        return _decode_slots.setdefault(count, threading.BoundedSemaphore(count))
