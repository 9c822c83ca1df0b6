"""A strict UBJSON reader for XGBoost's `.ubj` models, so that a file is read in Python (every
length checked against the bytes that are there) before xgboost's parser sees it.

XGBoost writes objects, typed arrays (`[$d#L...`) and scalars; this reads exactly UBJSON
draft 12, big-endian, and nothing else. Typed numeric arrays become numpy arrays.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

MAX_DEPTH = 64
_SCALARS = {
    b"i": (">b", 1),
    b"U": (">B", 1),
    b"I": (">h", 2),
    b"l": (">i", 4),
    b"L": (">q", 8),
    b"d": (">f", 4),
    b"D": (">d", 8),
}


class UbjsonError(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def take(self, count: int) -> memoryview:
        if count < 0 or self.at + count > len(self.data):
            raise UbjsonError(f"truncated at byte {self.at} (wanted {count} more bytes)")
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def marker(self) -> bytes:
        return bytes(self.take(1))

    def scalar(self, marker: bytes) -> Any:
        fmt, size = _SCALARS[marker]
        return struct.unpack(fmt, self.take(size))[0]

    def length(self) -> int:
        marker = self.marker()
        if marker not in (b"i", b"U", b"I", b"l", b"L"):
            raise UbjsonError(f"a length must be an integer, not {marker!r}")
        value = int(self.scalar(marker))
        if value < 0:
            raise UbjsonError("negative length")
        return value

    def string(self) -> str:
        try:
            return str(self.take(self.length()), "utf-8")
        except UnicodeDecodeError:
            raise UbjsonError("a string is not UTF-8") from None

    def value(self, marker: bytes, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise UbjsonError("nested too deeply")
        if marker in _SCALARS:
            return self.scalar(marker)
        if marker == b"S":
            return self.string()
        if marker == b"C":
            return str(self.take(1), "latin-1")
        if marker in (b"T", b"F", b"Z"):
            return {b"T": True, b"F": False, b"Z": None}[marker]
        if marker == b"[":
            return self.array(depth)
        if marker == b"{":
            return self.object(depth)
        raise UbjsonError(f"unknown marker {marker!r} at byte {self.at - 1}")

    def _container(self) -> tuple[bytes | None, int | None]:
        kind = count = None
        if bytes(self.data[self.at : self.at + 1]) == b"$":
            self.at += 1
            kind = self.marker()
            if bytes(self.take(1)) != b"#":
                raise UbjsonError("a typed container needs a count")
            count = self.length()
        elif bytes(self.data[self.at : self.at + 1]) == b"#":
            self.at += 1
            count = self.length()
        return kind, count

    def array(self, depth: int) -> Any:
        kind, count = self._container()
        if kind in _SCALARS and count is not None:
            fmt, size = _SCALARS[kind]
            raw = self.take(count * size)
            return np.frombuffer(raw, dtype=np.dtype(fmt)).astype(np.dtype(fmt).newbyteorder("="))
        items = []
        if count is not None:
            for _ in range(count):
                items.append(self.value(kind or self.marker(), depth + 1))
            return items
        while (marker := self.marker()) != b"]":
            items.append(self.value(marker, depth + 1))
        return items

    def object(self, depth: int) -> dict[str, Any]:
        kind, count = self._container()
        result: dict[str, Any] = {}
        if count is not None:
            for _ in range(count):
                key = self.string()
                result[key] = self.value(kind or self.marker(), depth + 1)
            return result
        while bytes(self.data[self.at : self.at + 1]) != b"}":
            key = self.string()
            result[key] = self.value(self.marker(), depth + 1)
        self.at += 1
        return result


def loads(data: bytes) -> Any:
    """The document in `data`; UbjsonError for anything truncated, unknown or left over."""
    reader = _Reader(data)
    document = reader.value(reader.marker(), 0)
    if reader.at != len(data):
        raise UbjsonError(f"{len(data) - reader.at} bytes after the document")
    return document
