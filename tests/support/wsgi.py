"""A WSGI application served by waitress in a thread of the test process, on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["serving"]


@contextmanager
def serving(application: Callable[..., Any], threads: int = 1) -> Iterator[Any]:
    """Serve ``application`` with waitress (``threads`` workers) until the block ends.

    Yields the server (its port is ``effective_port``). It is stopped from inside its own loop:
    sockets closed by another thread while the loop polls them make the loop's thread die on a
    bad file descriptor.
    """
    import waitress
    from waitress import wasyncore

    server = waitress.create_server(application, host="127.0.0.1", port=0, threads=threads)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        # every socket of the loop (listener, channels, trigger) closed in the loop's thread;
        # the loop then finds its map empty and returns
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(timeout=30)
        server.task_dispatcher.shutdown()
        if thread.is_alive():
            raise RuntimeError("waitress did not stop within 30 s")
