"""Wyoming's wire format with every length bounded, shared by the Home Assistant satellite (a server) and the
speech-to-text sink (a client).

``wyoming.event.async_read_event`` reads whatever data and payload lengths a peer announces; a hostile or broken
peer could make the speaker buffer gigabytes. ``read_event`` refuses any length past its bound instead, and
``audio_events`` streams an utterance the way a live satellite does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from . import SAMPLE_RATE

MAX_LINE_BYTES = 16 * 1024
"""Longest event header line accepted (Home Assistant's are a few hundred bytes)."""
MAX_DATA_BYTES = 64 * 1024
"""Largest JSON data block accepted after a header."""
MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest binary payload accepted (Home Assistant sends its reply in 2 kB chunks)."""
MAX_TRANSCRIPT_CHARS = 1000
"""A transcript longer than this (a sentence is a few dozen characters) is cut here."""
CHUNK_SAMPLES = 1600
"""Audio per Wyoming chunk: 100 ms, like a live satellite sends."""


class ProtocolError(Exception):
    """The peer broke the framing or a bound; the connection is closed."""


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"a {key} of {value!r}")
    if value > limit:
        raise ProtocolError(f"a {key} of {value} bytes (at most {limit} are accepted)")
    return value


async def read_event(reader: asyncio.StreamReader) -> Any:
    """The next Wyoming event from ``reader`` (opened with ``limit=MAX_LINE_BYTES``); None at end of stream.

    ProtocolError for a length past its bound or broken framing: the caller closes the connection.
    """
    from wyoming.event import Event as WyomingEvent

    try:
        line = await reader.readline()
    except ValueError:  # the StreamReader's limit: a header line without an end
        raise ProtocolError(f"an event header longer than {MAX_LINE_BYTES} bytes") from None
    if not line.endswith(b"\n"):
        return None  # closed (possibly mid-line)
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolError("an event header that is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str) or not header["type"]:
        raise ProtocolError("an event header without a type")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("event data that is not a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    try:
        if data_length:
            try:
                extra = json.loads(await reader.readexactly(data_length))
            except (ValueError, RecursionError):
                raise ProtocolError("event data that is not JSON") from None
            if not isinstance(extra, dict):
                raise ProtocolError("event data that is not a JSON object")
            data.update(extra)
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    return WyomingEvent(type=header["type"], data=data, payload=payload)


def printable(text: object, limit: int) -> str:
    """A peer's string made safe for one log line or event: control characters replaced, length bounded."""
    return "".join(c if c.isprintable() else "?" for c in str(text)[:limit])


def audio_events(audio: bytes) -> Iterator[Any]:
    """16 kHz mono S16_LE ``audio`` as Wyoming events: audio-start, 100 ms audio-chunks, audio-stop."""
    from wyoming.audio import AudioChunk, AudioStart, AudioStop

    fmt = {"rate": SAMPLE_RATE, "width": 2, "channels": 1}
    yield AudioStart(**fmt, timestamp=0).event()
    step = CHUNK_SAMPLES * 2
    for offset in range(0, len(audio), step):
        yield AudioChunk(**fmt, audio=audio[offset:offset + step], timestamp=offset * 1000 // (2 * SAMPLE_RATE)).event()
    yield AudioStop(timestamp=len(audio) * 1000 // (2 * SAMPLE_RATE)).event()
