"""The checkpoint container: named arrays and a JSON header, zstd-compressed. No pickle.

Layout (before compression): ``MAGIC``, a 4-byte big-endian header length, the header (JSON:
format, library versions, scalar fields, and each array's name, type and byte length), then the
arrays' bytes in header order. Arrays are numpy arrays (dtype string and shape kept), Python
``array.array`` (type code kept), raw bytes, or lists of strings (UTF-8 lengths + one blob). A
reader checks the format and hands the arrays back as the types they were written.
"""

from __future__ import annotations

import platform
from array import array
from typing import Any

import numpy as np
import orjson
import zstandard

from streams.errors import StateError

MAGIC = b"FSCK"
FORMAT = 1
# zstd level 1: about 400 MB/s of state on one core here, 7 times zlib level 1's speed for about
# the same size (stage 1 copies a snapshot out between two batches and compresses it on a thread
# of its own: ``streams.stage1.checkpointing``)
COMPRESSION_LEVEL = 1


def library_versions() -> dict[str, str]:
    import river

    from streams import __version__

    return {
        "fraudstream": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "river": river.__version__,
        "zstandard": zstandard.__version__,
    }


class StateWriter:
    """Collects the scalars (``meta``) and arrays of one state; ``encode`` gives its bytes."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self._entries: list[list[Any]] = []
        self._buffers: list[bytes] = []
        self._names: set[str] = set()

    def _add(self, name: str, kind: list[Any], data: bytes) -> None:
        if name in self._names:
            raise StateError(f"state field {name!r} written twice")
        self._names.add(name)
        self._entries.append([name, *kind, len(data)])
        self._buffers.append(data)

    def numpy(self, name: str, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values)
        self._add(name, ["np", values.dtype.str, list(values.shape)], values.tobytes())

    def pyarray(self, name: str, values: array[Any]) -> None:
        self._add(name, ["array", values.typecode], values.tobytes())

    def raw(self, name: str, values: bytes | bytearray) -> None:
        self._add(name, ["bytes"], bytes(values))

    def strings(self, name: str, values: list[str]) -> None:
        text = "".join(values)
        data = text.encode()
        if len(data) == len(text):  # ASCII: each string's bytes are its characters
            lengths = np.fromiter(map(len, values), np.int32, len(values))
        else:
            encoded = [v.encode() for v in values]
            lengths = np.fromiter(map(len, encoded), np.int32, len(encoded))
            data = b"".join(encoded)
        self.numpy(f"{name}.len", lengths)
        self.raw(f"{name}.utf8", data)

    def frozen(self) -> list[bytes]:
        """The uncompressed pieces of the state as it is now (the header serialised, every
        array already copied): ``compress`` of them may run later, on another thread."""
        header = orjson.dumps(
            {
                "format": FORMAT,
                "versions": library_versions(),
                "meta": self.meta,
                "arrays": self._entries,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        return [MAGIC, len(header).to_bytes(4, "big"), header, *self._buffers]

    def encode(self) -> bytes:
        return compress(self.frozen())


def compress(pieces: list[bytes]) -> bytes:
    """The checkpoint bytes of ``StateWriter.frozen`` pieces (zstd releases the GIL while it
    compresses)."""
    return zstandard.ZstdCompressor(level=COMPRESSION_LEVEL).compress(b"".join(pieces))


class StateReader:
    """A decoded state: ``meta`` and the arrays by name."""

    def __init__(self, data: bytes, where: str = "checkpoint"):
        self.where = where
        try:
            body = zstandard.ZstdDecompressor().decompress(data)
        except zstandard.ZstdError as exc:
            raise StateError(f"{where}: not a checkpoint ({exc})") from None
        if body[:4] != MAGIC:
            raise StateError(f"{where}: not a checkpoint (magic {body[:4]!r})")
        size = int.from_bytes(body[4:8], "big")
        try:
            header = orjson.loads(body[8 : 8 + size])
        except orjson.JSONDecodeError as exc:
            raise StateError(f"{where}: unreadable header ({exc})") from None
        if header.get("format") != FORMAT:
            raise StateError(f"{where}: checkpoint format {header.get('format')!r}, want {FORMAT}")
        self.versions: dict[str, str] = header["versions"]
        self.meta: dict[str, Any] = header["meta"]
        self._entries: dict[str, tuple[list[Any], memoryview]] = {}
        view = memoryview(body)
        at = 8 + size
        for entry in header["arrays"]:
            name, kind, length = entry[0], entry[1:-1], entry[-1]
            self._entries[name] = (kind, view[at : at + length])
            at += length
        if at != len(body):
            raise StateError(f"{where}: {len(body) - at} bytes beyond the declared arrays")

    def _get(self, name: str, kind: str) -> tuple[list[Any], memoryview]:
        try:
            spec, data = self._entries[name]
        except KeyError:
            raise StateError(f"{self.where}: no field {name!r}") from None
        if spec[0] != kind:
            raise StateError(f"{self.where}: field {name!r} is {spec[0]}, not {kind}")
        return spec, data

    def has(self, name: str) -> bool:
        """Whether the state holds a field ``name`` (one added in a later version may not)."""
        return name in self._entries

    def numpy(self, name: str) -> np.ndarray:
        spec, data = self._get(name, "np")
        return np.frombuffer(data, dtype=np.dtype(spec[1])).reshape(spec[2]).copy()

    def pyarray(self, name: str) -> array[Any]:
        spec, data = self._get(name, "array")
        out = array(spec[1])
        out.frombytes(data)
        return out

    def raw(self, name: str) -> bytes:
        return bytes(self._get(name, "bytes")[1])

    def strings(self, name: str) -> list[str]:
        lengths = self.numpy(f"{name}.len")
        blob = self.raw(f"{name}.utf8")
        ends = np.cumsum(lengths).tolist()
        starts = [0, *ends[:-1]] if ends else []
        return [blob[a:b].decode() for a, b in zip(starts, ends, strict=True)]


def split_pyarrays(flat: array[Any], lengths: np.ndarray) -> list[array[Any]]:
    """``flat`` cut into consecutive pieces of ``lengths`` (the reverse of concatenating)."""
    out: list[array[Any]] = []
    at = 0
    code = flat.typecode
    for n in lengths.tolist():
        piece = array(code)
        piece.frombytes(memoryview(flat)[at : at + n].tobytes())
        out.append(piece)
        at += n
    return out
