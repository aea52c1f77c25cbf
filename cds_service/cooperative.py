"""Blocking calls made without stopping a gevent worker.

Under gunicorn's gevent worker every connection is a greenlet of one OS thread: a call that
blocks in C (sqlite3 writing a batch, a WAL checkpoint's fsync, sqlite's busy handler sleeping
while another worker holds the write lock) stops every connection of the worker until it
returns. `off_hub` runs such a call in the hub's pool of native threads instead (sqlite3
releases the GIL while it works), the calling greenlet waiting cooperatively; without gevent
it is a plain call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def off_hub(function: Callable[..., T], *args: object) -> T:
    if not _gevent_patched():
        return function(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(function, args)
