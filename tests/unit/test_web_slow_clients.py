"""Slow clients cannot make `notifier web` unreachable: a request must arrive whole within a
deadline, and one client address holds a bounded number of connections."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from notifier.config import load_settings
from notifier.operations import web


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A running `notifier web` (its real server setup) on a free port."""
    monkeypatch.setattr(web, "REQUEST_READ_SECONDS", 1.5, raising=False)
    settings = load_settings(web_host="127.0.0.1").model_copy(update={"port": 0})
    server: Any = web.make_server(settings)
    stopping = threading.Event()
    thread = threading.Thread(target=web.run_until, args=(server, stopping), daemon=True)
    thread.start()
    yield int(server.effective_port)
    web.stop_serving(server, stopping)
    thread.join(10)


def trickler(port: int) -> socket.socket:
    """A client that has begun a request and sends the rest of its headers very slowly."""
    sock = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.1", 0))
    sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
    return sock


def index_from(port: int, source: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(100)


def test_many_trickling_clients_do_not_shut_others_out(port: int) -> None:
    slow = [trickler(port) for _ in range(getattr(web, "CONNECTION_LIMIT", 100) + 20)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        assert index_from(port, "127.0.0.2").startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 2
    finally:
        for sock in slow:
            sock.close()


def test_a_request_that_never_finishes_arriving_is_cut_off(port: int) -> None:
    sock = trickler(port)
    sock.settimeout(0.2)
    closed_after = None
    started = time.monotonic()
    while time.monotonic() - started < 8:
        try:
            sock.sendall(b"a")  # activity: waitress' idle timeout alone never fires
            if sock.recv(100) == b"":
                closed_after = time.monotonic() - started
                break
        except TimeoutError:
            continue
        except OSError:
            closed_after = time.monotonic() - started
            break
    sock.close()
    assert closed_after is not None and closed_after < 4
