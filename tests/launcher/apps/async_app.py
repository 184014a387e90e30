"""An asyncio SQLAlchemy app (aiosqlite) for the launcher tests, run under opentelemetry-instrument.

Two tasks hold both connections of a two-connection pool while a third task's checkout times out
(exactly one timeout); then the holders release and a few ordinary checkouts follow. The app
stays idle as ``workload.rest`` does (until stdin closes when ``POOLWATCH_APP_REST=stdin``, else
``POOLWATCH_APP_SETTLE`` seconds), so periodic metric exports see the pool at rest, then disposes
of the engine as an asyncio app must (aiosqlite's worker threads would otherwise keep the process
from exiting). ``POOLWATCH_APP_DB`` names the SQLite file. The last line of output is
``RESULT {json}`` as in ``sync_app.py``; the rest window ends before the engine is disposed.
"""

import sqlalchemy  # noqa: I001 - first, before any other import

import asyncio
import json
import os
import sys
import time
from typing import Any

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

AFTERWARDS = 3


async def hold(engine: AsyncEngine, holding: asyncio.Queue[None], release: asyncio.Event) -> None:
    """Check out a connection, report it, and keep it until ``release`` is set."""
    async with engine.connect() as connection:
        await connection.execute(sqlalchemy.text("select 1"))
        await holding.put(None)
        await release.wait()


async def try_checkout(engine: AsyncEngine) -> tuple[str, str] | None:
    """One checkout while the pool is exhausted: the error's type and message if it timed out."""
    try:
        async with engine.connect():
            return None
    except exc.TimeoutError as error:
        return f"{type(error).__module__}.{type(error).__qualname__}", str(error)


async def run(engine: AsyncEngine) -> dict[str, Any]:
    """The workload; returns what the app saw."""
    holding: asyncio.Queue[None] = asyncio.Queue()
    release = asyncio.Event()
    holders = [asyncio.create_task(hold(engine, holding, release)) for _ in range(2)]
    for _ in holders:
        await holding.get()
    outcome = await asyncio.create_task(try_checkout(engine))
    attempts = len(holders) + 1
    error_type, message = outcome if outcome is not None else (None, None)
    if message is not None:
        print(f"timed out: {message}", flush=True)
    release.set()
    await asyncio.gather(*holders)
    for _ in range(AFTERWARDS):
        attempts += 1
        async with engine.connect() as connection:
            await connection.execute(sqlalchemy.text("select 1"))
    return {"attempts": attempts, "error_type": error_type, "message": message}


async def main() -> None:
    """Run the workload, let the pool rest, dispose of the engine, report."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{os.environ['POOLWATCH_APP_DB']}",
        poolclass=AsyncAdaptedQueuePool,
        pool_size=2,
        max_overflow=0,
        pool_timeout=0.2,
        pool_logging_name="orders",
    )
    result = await run(engine)
    result["rest_from_ns"] = time.time_ns()
    if os.environ.get("POOLWATCH_APP_REST") == "stdin":  # as workload.rest
        print(f"RESTING {time.time_ns()}", flush=True)
        await asyncio.to_thread(sys.stdin.read)
    else:
        await asyncio.sleep(float(os.environ.get("POOLWATCH_APP_SETTLE", "0")))
    result["rest_until_ns"] = time.time_ns()
    await engine.dispose()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
