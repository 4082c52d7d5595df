"""One Server-Sent Events client of the streamers scenario, without Locust (tests drive it against the real app):
it connects from its own source address, resumes with Last-Event-ID, reads the chunked stream with each
byte's arrival time (ArrivalReader), and tells every delivered event as live or a replay (push_delivery)."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from loadtests.push_delivery import Connection, Delivery, classify

_SO_TIMESTAMPNS = 35  # Linux: the kernel's receive time (CLOCK_REALTIME) of each read, as ancillary data
_TIMESPEC = struct.Struct("qq")


class ArrivalReader:
    """readline/read over a socket that also says when the bytes they return arrived: the kernel's receive
    timestamp (SO_TIMESTAMPNS) of the read that brought the last of them, not the time this process got
    round to parsing them. One generator process holds hundreds of streams and every write reaches all
    of them at once: stamped at parse time, the last stream's delay would include the generator parsing
    every other stream's copy first (measured: ~80 us per event, 40 ms for 500 streams), a cost no real
    client pays. Where the socket option is missing, the time of the read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            self.stamped = True
        except OSError:
            self.stamped = False
        self.buffer = bytearray()
        self.start = 0  # stream offset of buffer[0]
        self.reads: deque[tuple[int, float]] = deque()  # (stream offset after the read, arrival time)
        self.arrived = 0.0  # arrival time of the last byte returned so far

    def _fill(self) -> bool:
        if self.stamped:
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(_TIMESPEC.size))
            stamp = next(
                (sec + nsec / 1e9 for level, kind, raw in ancillary
                 if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS
                 for sec, nsec in [_TIMESPEC.unpack(raw[: _TIMESPEC.size])]),
                time.time(),
            )  # fmt: skip
        else:
            data, stamp = self.sock.recv(65536), time.time()
        if not data:
            return False
        self.buffer += data
        self.reads.append((self.start + len(self.buffer), stamp))
        return True

    def _take(self, size: int) -> bytes:
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        self.start += size
        while self.reads and self.reads[0][0] < self.start:
            self.reads.popleft()
        if out and self.reads:
            self.arrived = self.reads[0][1]  # the read that brought the byte just before `start`
        return out

    def readline(self) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            if not self._fill():
                return self._take(len(self.buffer))
        return self._take(end + 1)

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                break
        return self._take(min(size, len(self.buffer)))


class SseClient:
    """A stream's successive connections. `stream(on_event)` holds one connection until it ends, calling
    `on_event(event, delivery)` for every post event (`delivery` None for `reset`); `drop()`, from another
    greenlet or thread, ends it as a client that goes away would."""

    def __init__(self, hostname: str, port: int, path: str, source: str | None = None) -> None:
        self.hostname, self.port, self.path, self.source = hostname, port, path, source
        self.last_id: str | None = None
        self.connection: Connection | None = None  # the current one (what its deliveries are)
        self.ended_at: float | None = None  # when the previous connection ended (wall clock)
        self.connected_at: float | None = None  # monotonic, the first connection's 200
        self.sock: socket.socket | None = None
        self.dropped = False  # the current connection was ended by drop()

    def drop(self) -> None:
        """Closes the connection now. shutdown() first: it also wakes a read blocked in another thread (a plain
        close() does not, under threads); under gevent, close() alone would do. Through a makefile() object, as
        the scenario once read, close() only marked the socket closed while the file held it open: the stream
        went on, and no "forced reconnect" ever left the wire."""
        sock = self.sock
        if sock is None:
            return
        self.dropped = True
        self.ended_at = time.time()
        with contextlib.suppress(OSError):  # already gone
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        """After a connection ended (by the server, an error or drop()): ready for the next."""
        if self.sock is None:
            return
        if not self.dropped:
            self.ended_at = time.time()
        self.sock.close()
        self.sock = None

    def stream(self, on_event: Callable[[dict[str, Any], Delivery | None], None]) -> None:
        sock = socket.create_connection(
            (self.hostname, self.port), timeout=30, source_address=(self.source, 0) if self.source else None
        )
        self.sock, self.dropped = sock, False
        headers = f"GET {self.path} HTTP/1.1\r\nHost: {self.hostname}:{self.port}\r\nAccept: text/event-stream\r\n"
        if self.last_id:
            headers += f"Last-Event-ID: {self.last_id}\r\n"
        previous = self.connection
        self.connection = Connection(
            sent_at=time.time(),
            resumed=self.last_id is not None,
            previous_sent_at=previous.sent_at if previous else None,
            previous_ended_at=self.ended_at if previous else None,
        )
        sock.sendall((headers + "\r\n").encode())
        reader = ArrivalReader(sock)
        status = reader.readline().decode()
        if " 200 " not in status:
            raise ValueError(f"stream answered {status.strip()!r}")
        while reader.readline() not in (b"\r\n", b""):  # headers
            pass
        self.connected_at = self.connected_at or time.monotonic()
        fields: dict[str, str] = {}
        while True:
            size_line = reader.readline()  # chunked transfer coding: size, data, CRLF
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            chunk = reader.read(size).decode()
            arrived = reader.arrived  # when the chunk's last byte reached this socket
            reader.readline()
            for line in chunk.split("\n"):
                if line == "":
                    self._dispatch(fields, arrived, self.connection, on_event)
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

    def _dispatch(
        self,
        fields: dict[str, str],
        arrived: float,
        connection: Connection,
        on_event: Callable[[dict[str, Any], Delivery | None], None],
    ) -> None:
        if "id" in fields:
            self.last_id = fields["id"]
        if "data" not in fields:
            return
        event = json.loads(fields["data"])
        if event.get("type") == "reset":
            on_event(event, None)
            return
        written = datetime.fromisoformat(event["written_at"].replace("Z", "+00:00")).timestamp()
        on_event(event, classify(connection, written, arrived))
