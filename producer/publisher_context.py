"""Which publisher the running task uses.

`with publishing(Publisher(settings)):` (or `publishing(settings)`, which also
closes it) chooses one for the code inside, threads and asyncio tasks it starts
included. Otherwise one publisher per process is built from the environment on
first use and flushed and closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

from assetlog.config import Settings
from assetlog.producer.publisher import Publisher, close_all_publishers

_CURRENT: ContextVar[Publisher | None] = ContextVar("assetlog_publisher", default=None)
_default_lock = threading.Lock()
_default: Publisher | None = None


def current_publisher() -> Publisher:
    """The publisher chosen with `publishing(...)`, else this process's default one."""
    chosen = _CURRENT.get()
    if chosen is not None and not chosen.closed and not chosen.other_process:
        return chosen
    return default_publisher()


def default_publisher() -> Publisher:
    """One publisher per process, configured by the environment (`Settings.from_env()`)."""
    global _default
    known = _default
    if known is not None and not known.closed and not known.other_process:
        return known  # the usual case, without the lock
    with _default_lock:
        if _default is None or _default.closed or _default.other_process:
            _default = Publisher(Settings.from_env())
        return _default


@contextmanager
def publishing(target: Publisher | Settings) -> Iterator[Publisher]:
    """Use `target` for the task runs inside; a `Settings` builds a publisher closed on exit."""
    publisher = Publisher(target) if isinstance(target, Settings) else target
    token = _CURRENT.set(publisher)
    try:
        yield publisher
    finally:
        _CURRENT.reset(token)
        if isinstance(target, Settings):
            publisher.close()


def use_settings(settings: Settings) -> AbstractContextManager[Publisher]:
    """`publishing(settings)`: a publisher for `settings`, closed at the end of the block."""
    return publishing(settings)


atexit.register(close_all_publishers)
