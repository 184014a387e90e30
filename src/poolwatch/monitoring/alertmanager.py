"""An example Alertmanager configuration for poolwatch's alerts.

Routes by severity (critical pages, warning opens a ticket) and inhibits a warning while the
critical alert of the same definition fires for the same pool, alias or server.
"""

from __future__ import annotations

from typing import Any, Final

from poolwatch.monitoring import promql
from poolwatch.monitoring.alerts import ALERT_LABEL
from poolwatch.monitoring.names import INSTANCE_LABEL, SERVICE_LABEL

#: Labels that say which thing an alert is about; an alert's critical and warning match on them.
SAME_THING: Final = (ALERT_LABEL, SERVICE_LABEL, INSTANCE_LABEL, promql.POOL, promql.DJANGO_ALIAS)

PAGER: Final = "poolwatch-pager"
TICKETS: Final = "poolwatch-tickets"
DEFAULT: Final = "poolwatch-default"


def config() -> dict[str, Any]:
    """The example configuration (receivers are placeholders to replace)."""
    return {
        "route": {
            "receiver": DEFAULT,
            "group_by": ["alertname", SERVICE_LABEL, promql.POOL],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "matchers": ['severity="critical"'],
                    "receiver": PAGER,
                    "repeat_interval": "1h",
                },
                {"matchers": ['severity="warning"'], "receiver": TICKETS},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": list(SAME_THING),
            }
        ],
        "receivers": [
            {"name": DEFAULT},
            {"name": PAGER, "webhook_configs": [{"url": "http://pager.example.invalid/alerts"}]},
            {
                "name": TICKETS,
                "webhook_configs": [{"url": "http://tickets.example.invalid/alerts"}],
            },
        ],
    }
