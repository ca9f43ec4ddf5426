"""A websocket client (RFC 6455), just enough for ComfyUI's /ws progress messages.

Standard library only, as the whole client: it runs with a bare python3 or ComfyUI's own and never
needs a package installed into ComfyUI's python (docs/scripts.md says why no websocket library).
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import ssl
import struct
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketClosed(Exception):
    pass


class WebSocket:
    """A blocking websocket client: opening handshake, unmasked server frames (fragmented or not),
    ping/pong and close. Sent frames are masked, as a client's must be."""

    def __init__(self, url: str, timeout: float = 30):
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        self.timeout = timeout
        self._buffer = b""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if secure:
            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode("ascii"))
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status, *header_lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode("ascii")
        if status.split()[1:2] != ["101"] or headers.get("sec-websocket-accept") != expected:
            self.sock.close()
            raise ConnectionError(f"websocket handshake refused: {status}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise WebSocketClosed("connection closed by the server")
        self._buffer += chunk

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _read_frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if second & 0x80 else None
        payload = self._read(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    def send(self, opcode: int, payload: bytes = b"") -> None:
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", length)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self, wait: float) -> tuple[int, bytes] | None:
        """The next whole message (OP_TEXT or OP_BINARY, payload), or None if none began within
        `wait` seconds. Pings are answered; a close frame raises WebSocketClosed."""
        if not self._buffer:
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                return None
        opcode, parts = None, []
        while True:
            fin, op, payload = self._read_frame()
            if op == OP_PING:
                self.send(OP_PONG, payload)
            elif op == OP_CLOSE:
                self.close()
                raise WebSocketClosed("the server closed the websocket")
            elif op in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                opcode = op if op != OP_CONTINUATION else opcode
                parts.append(payload)
                if fin:
                    return opcode, b"".join(parts)

    def close(self) -> None:
        try:
            self.send(OP_CLOSE, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()
