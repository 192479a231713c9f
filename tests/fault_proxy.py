"""A loopback TCP proxy that makes a real server slow or failing, for fault-injection tests.

`FaultProxy(upstream_port)` listens on 127.0.0.1 and forwards every connection to the upstream
(e.g. moto's S3 API server). While running, a test sets:
  - `delay_s`: each chunk of an answer waits this long before it is forwarded (a slow server);
  - `fail_requests`: the next N requests (client chunks) are answered by closing the connection
    without a response (a server that drops requests); -1 drops every request.
`requests` and `dropped` count what it saw.
"""

from __future__ import annotations

import socket
import threading
import time


class FaultProxy:
    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.delay_s, self.fail_requests = 0.0, 0
        self.requests = self.dropped = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def close(self) -> None:
        self._stop.set()
        self._server.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump_requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_answers, args=(upstream, client), daemon=True).start()

    def _take_failure(self) -> bool:
        with self._lock:
            self.requests += 1
            if self.fail_requests == 0:
                return False
            self.fail_requests -= self.fail_requests > 0
            self.dropped += 1
            return True

    def _pump_requests(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while chunk := client.recv(65536):
                if self._take_failure():
                    break
                upstream.sendall(chunk)
        except OSError:
            pass
        _close(client, upstream)

    def _pump_answers(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := upstream.recv(65536):
                if self.delay_s:
                    time.sleep(self.delay_s)
                client.sendall(chunk)
        except OSError:
            pass
        _close(client, upstream)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
