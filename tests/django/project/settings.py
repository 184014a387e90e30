"""Settings of the test project; the database comes from ``POOLWATCH_DJANGO_*`` variables.

Aliases: ``default`` closes its connection at the end of each request (``CONN_MAX_AGE = 0``),
``persistent`` keeps it for five minutes, ``checked`` too with health checks on, ``pooled`` uses
Django's own psycopg pool (5.1+).
"""

import os

SECRET_KEY = "poolwatch-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "tests.django.project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True

_SERVER = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": os.environ.get("POOLWATCH_DJANGO_DB_HOST", "127.0.0.1"),
    "PORT": os.environ.get("POOLWATCH_DJANGO_DB_PORT", "5432"),
    "NAME": os.environ.get("POOLWATCH_DJANGO_DB_NAME", "poolwatch"),
    "USER": os.environ.get("POOLWATCH_DJANGO_DB_USER", "poolwatch"),
    "PASSWORD": os.environ.get("POOLWATCH_DJANGO_DB_PASSWORD", ""),
}

DATABASES = {
    "default": {**_SERVER, "CONN_MAX_AGE": 0},
    "persistent": {**_SERVER, "CONN_MAX_AGE": 300},
    "checked": {**_SERVER, "CONN_MAX_AGE": 300, "CONN_HEALTH_CHECKS": True},
    "pooled": {
        **_SERVER,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"pool": {"min_size": 2, "max_size": 2, "timeout": 5}},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django": {"level": "CRITICAL"}},
}
