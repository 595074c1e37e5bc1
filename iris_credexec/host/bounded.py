"""A threading server that never takes more than `max_connections` at once.

Past the limit a new connection gets a quick refusal from the accepting thread (the
server's `overloaded` answer) instead of a thread, so a flood of slow or silent clients
cannot exhaust the host; each accepted connection releases its slot when handled.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from typing import Any


class BoundedThreadingMixIn(socketserver.ThreadingMixIn):
    daemon_threads = True
    overloaded: bytes = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    def limit_connections(self, max_connections: int) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                # Read what the caller sent (briefly) so closing does not reset the
                # connection before it reads the refusal.
                request.settimeout(0.2)
                with contextlib.suppress(OSError):
                    request.recv(65536)
                with contextlib.suppress(OSError):
                    request.sendall(self.overloaded)
            finally:
                self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()
