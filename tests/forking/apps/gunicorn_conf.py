"""gunicorn settings: the OpenTelemetry SDK set up in each worker, and what SQLAlchemy documents
for engines made before the fork."""

import sys

import gunicorn_sink


def post_fork(server: object, worker: object) -> None:
    """Set this worker's telemetry up; drop the pool inherited from the master, if any,
    without closing its connections."""
    gunicorn_sink.install()
    app = sys.modules.get("gunicorn_app")
    if app is not None:
        app.ENGINE.dispose(close=False)
