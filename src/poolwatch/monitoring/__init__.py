"""Monitoring as code: dashboards, alert rules, runbooks and their deployment, from the catalog.

Everything here reads metric names from :mod:`poolwatch.catalog` and selectors and thresholds
from one :class:`~poolwatch.monitoring.config.MonitoringConfig`. Needs the ``monitoring`` extra.
"""
