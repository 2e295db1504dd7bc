"""Incremental parser for ``multipart/related`` WADO-RS answers (RFC 2046).

Archives answer a series with one multipart body; each part is one DICOM instance with its
own headers (Content-Type with a transfer-syntax parameter, sometimes Content-Location). The
parser yields parts as soon as they are complete, so a large series never sits in memory
twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def boundary_of(content_type: str) -> str | None:
    """The boundary parameter of a Content-Type header, unquoted; None if not multipart."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "multipart":
        return None
    return message.get_param("boundary")  # type: ignore[return-value]


def media_params(content_type: str) -> dict[str, str]:
    message = Message()
    message["content-type"] = content_type
    return {k.lower(): str(v) for k, v in message.get_params(failobj=[])[1:]}


@dataclass
class MultipartParser:
    boundary: str
    _buffer: bytearray = field(default_factory=bytearray)
    _started: bool = False
    _finished: bool = False
    _scanned: int = 0  # bytes of the current part already searched for the separator

    def __post_init__(self) -> None:
        self._delimiter = b"--" + self.boundary.encode("ascii")
        self._separator = b"\r\n" + self._delimiter

    def feed(self, chunk: bytes) -> Iterator[Part]:
        self._buffer.extend(chunk)
        while not self._finished:
            if not self._started:
                start = self._buffer.find(self._delimiter)
                if start < 0:
                    return
                del self._buffer[: start + len(self._delimiter)]
                self._started = True
                continue
            # Right after a delimiter: '--' ends the body, else CRLF starts a part.
            if len(self._buffer) < 2:
                return
            if self._buffer[:2] == b"--":
                self._finished = True
                return
            end = self._buffer.find(self._separator, self._scanned)
            if end < 0:
                self._scanned = max(0, len(self._buffer) - len(self._separator))
                return
            part = _parse_part(self._buffer, end)
            del self._buffer[: end + len(self._separator)]
            self._scanned = 0
            yield part

    def close(self) -> None:
        if not self._finished:
            raise ValueError("multipart body ended before its closing boundary")


def _parse_part(buffer: bytearray, end: int) -> Part:
    """The part in ``buffer[:end]`` (from right after its delimiter). Its body is copied out
    once: a series of 512x512 CT slices is tens of megabytes, and each copy of it costs."""
    # Skip transport padding and the CRLF after the delimiter.
    line_end = buffer.find(b"\r\n", 0, end)
    start = line_end + 2 if line_end >= 0 else end
    if buffer.startswith(b"\r\n", start, end):
        return Part({}, _copy(buffer, start + 2, end))
    head_end = buffer.find(b"\r\n\r\n", start, end)
    if head_end < 0:
        raise ValueError("multipart part without a blank line after its headers")
    headers: dict[str, str] = {}
    for line in bytes(buffer[start:head_end]).decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip():
            headers[name.strip().lower()] = value.strip()
    return Part(headers, _copy(buffer, head_end + 4, end))


def _copy(buffer: bytearray, start: int, end: int) -> bytes:
    with memoryview(buffer) as view:
        return bytes(view[start:end])
