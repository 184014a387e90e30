"""Share of pool-timeout holders that name the application's own function, for a FastAPI +
SQLModel application built as a wheel and pip-installed into a site-packages directory.

The application serves a sync and an async endpoint that each hold a connection for two seconds
through SQLModel's ``Session``; 24 concurrent requests under uvicorn on loopback fill its pool of
five. Needs ``sqlmodel``, ``fastapi``, ``uvicorn`` and ``httpx`` in this environment (they are
not poolwatch dependencies: ``pip install sqlmodel fastapi uvicorn httpx``).

    python benchmarks/wrapped_app_holders.py [--poolwatch-src DIR] [--write-docs]

``--poolwatch-src`` runs the application against another poolwatch checkout's ``src`` (to
compare before and after a change); only this checkout's figures are written into the docs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import _docs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.wheels import build_wheel, pip_install, site_packages  # noqa: E402

APP = """
import asyncio
import time

from fastapi import FastAPI
from sqlmodel import Field, Session, SQLModel, create_engine, select


class Order(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    item: str


engine = create_engine(
    "sqlite:///orders.db", pool_size=5, max_overflow=0, pool_timeout=1.0,
    connect_args={"check_same_thread": False},
)
SQLModel.metadata.create_all(engine)
app = FastAPI()


@app.get("/orders")
def list_orders():
    with Session(engine) as session:
        rows = session.exec(select(Order)).all()
        time.sleep(2.0)
        return len(rows)


@app.get("/report")
async def monthly_report():
    with Session(engine) as session:
        rows = session.exec(select(Order)).all()
        await asyncio.sleep(2.0)
        return len(rows)
"""

DRIVER = """
import json, socket, threading, time

import httpx, uvicorn

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture

telemetry = Capture()
poolwatch.instrument_sqlalchemy(leak_threshold=0, **telemetry.providers)
from ordersapp.main import app

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="critical"))
thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
thread.start()
while not server.started:
    time.sleep(0.05)
url = "http://127.0.0.1:%d" % sock.getsockname()[1]


def get(path):
    try:
        httpx.get(url + path, timeout=30)
    except httpx.HTTPError:
        pass


clients = [
    threading.Thread(target=get, args=("/orders" if i % 2 else "/report",)) for i in range(24)
]
for client in clients:
    client.start()
for client in clients:
    client.join()
server.should_exit = True
thread.join()
entries = [
    entry
    for event in telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    for entry in event.attributes[catalog.POOL_HOLDERS]
]
count = lambda entry: int(entry.split(" x ", 1)[0])
own = [e for e in entries if "ordersapp" in e and (" in list_orders " in e or " in monthly_report " in e)]
print(json.dumps({"holders": sum(map(count, entries)), "naming_app": sum(map(count, own)),
                  "where": sorted({e.split(" (")[0].rsplit("/", 1)[-1] for e in entries})}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poolwatch-src", type=Path, default=ROOT / "src")
    _docs.add_flag(parser)
    args = parser.parse_args()
    if args.write_docs and args.poolwatch_src.resolve() != ROOT / "src":
        parser.error("--write-docs writes this checkout's figures only: no --poolwatch-src")
    missing = [
        m for m in ("sqlmodel", "fastapi", "uvicorn", "httpx") if not importlib.util.find_spec(m)
    ]
    if missing:
        sys.exit(f"needs {', '.join(missing)}: pip install sqlmodel fastapi uvicorn httpx")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {"ordersapp/__init__.py": "", "ordersapp/main.py": textwrap.dedent(APP).lstrip()}
        target = site_packages(root)
        pip_install([build_wheel(root, "ordersapp", files)], target)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(args.poolwatch_src), str(target)])}
        done = subprocess.run(
            [sys.executable, "-c", DRIVER],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    share = result["naming_app"] / result["holders"] if result["holders"] else 0.0
    print(f"poolwatch from {args.poolwatch_src}")
    print(f"holders in timeout events: {result['holders']}")
    print(f"naming the app's function: {result['naming_app']} ({share:.0%})")
    print(f"functions named: {', '.join(result['where'])}")
    if args.write_docs:
        _docs.write(
            "wrapped_app_holders",
            "| holders in timeout events | naming the app's function | share | functions named |\n"
            "| ---: | ---: | ---: | --- |\n"
            f"| {result['holders']} | {result['naming_app']} | {share:.0%} "
            f"| {', '.join(result['where'])} |",
        )


if __name__ == "__main__":
    main()
