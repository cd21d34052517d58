"""Close flytekit's S3 client sessions at exit, before flytekit stops its event loop.

Why: flytekit runs its fsspec S3 file system (s3fs) on an event loop in a background thread
and stops that loop from an atexit hook. s3fs's own finalizer runs later, when the loop is gone,
so the aiohttp session stays open and asyncio reports "Unclosed client session" through
flytekit's loop exception handler: one ERROR line at the end of every task pod's log (with
flytekit's rich log handler a traceback, since rich imports lazily while Python shuts down).

atexit runs hooks last-in, first-out. `install()` makes flytekit create its main-thread loop
(registering its stop hook) and then registers ours, so ours runs first while the loop still
runs. The close waits at most a few seconds and never raises: exiting matters more than tidiness.
"""

from __future__ import annotations

import asyncio
import atexit
import logging

from flytekit.utils.asyn import loop_manager

logger = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 5.0


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _close_s3_sessions(loop: asyncio.AbstractEventLoop) -> None:
    try:
        from s3fs import S3FileSystem
    except ImportError:
        return
    # fsspec caches file-system instances per class; flytekit's are among them.
    creators = [
        fs._s3creator
        for fs in list(S3FileSystem._cache.values())
        if getattr(fs, "_s3", None) is not None and getattr(fs, "_s3creator", None) is not None
    ]
    if not creators or loop.is_closed() or not loop.is_running():
        return

    async def close() -> None:
        for creator in creators:
            await creator.__aexit__(None, None, None)

    try:
        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=CLOSE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - at exit, a failed close must not fail the task
        logger.debug("closing S3 sessions at exit failed: %s", exc)


def install() -> None:
    loop = loop_manager.run_sync(_running_loop)
    atexit.register(_close_s3_sessions, loop)
