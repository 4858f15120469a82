"""The newest decoded uploads, by a hash of their bytes.

A client that clicks its way around one photo sends the same file with every request;
decoding it again (a PNG of a phone photo: tens of milliseconds) is the largest cost of a
click whose SAM embedding is already cached. The pixels are kept read-only, so no flow can
change what a later request gets, within a budget of bytes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from utils.image_io import DecodedImage


def _arrays(image: DecodedImage) -> list[np.ndarray]:
    return [a for a in (image.rgb, image.alpha, image.colour) if a is not None]


class DecodedUploads:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._kept: OrderedDict[bytes, DecodedImage] = OrderedDict()
        self._held = 0

    def decode(self, data: bytes, decode: Callable[[bytes], DecodedImage]) -> DecodedImage:
        """`decode(data)`, or the image it gave for the same bytes before. Failures are not
        kept: a bad file is refused each time it is sent."""
        digest = hashlib.blake2b(data, digest_size=20).digest()
        with self._lock:
            kept = self._kept.get(digest)
            if kept is not None:
                self._kept.move_to_end(digest)
                return kept
        image = decode(data)
        for array in _arrays(image):  # kept or not, alike: a flow that writes fails every time
            array.flags.writeable = False
        size = sum(a.nbytes for a in _arrays(image))
        if size > self.budget_bytes:
            return image
        with self._lock:
            if digest not in self._kept:
                self._kept[digest] = image
                self._held += size
            while self._held > self.budget_bytes:
                _, dropped = self._kept.popitem(last=False)
                self._held -= sum(a.nbytes for a in _arrays(dropped))
        return image
