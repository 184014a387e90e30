"""ASGI entry point of the test project.

``POOLWATCH_TEST_GC=off`` turns the garbage collector off: it stands for a busy process where
the collector does not get to a dropped connection soon enough, which is the case under test.
"""

import gc
import os

from django.core.asgi import get_asgi_application

if os.environ.get("POOLWATCH_TEST_GC") == "off":
    gc.disable()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.project.settings")

application = get_asgi_application()
