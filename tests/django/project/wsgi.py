"""WSGI entry point of the test project (``POOLWATCH_TEST_GC=off``: as in ``asgi.py``)."""

import gc
import os

from django.core.wsgi import get_wsgi_application

if os.environ.get("POOLWATCH_TEST_GC") == "off":
    gc.disable()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.project.settings")

application = get_wsgi_application()
