"""A small Django project served by the Django connection tests (in process and under the launcher)."""
