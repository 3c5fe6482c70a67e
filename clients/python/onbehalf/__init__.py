"""onbehalf: per-user authorization for Python agents (AutoGen and others), standard library only.

Example::

    import onbehalf
    from onbehalf import Client, governed

    client = Client("http://127.0.0.1:8787")

    @governed(client)
    def get_customer(customer_id: str) -> dict: ...

    with client.acting_as(user_token, agent="support-bot", tier="interactive"):
        get_customer("c-1")                       # checked, run, reported, redacted, audited

    # or, on a default client from ONBEHALF_URL:
    user = onbehalf.verify(request.headers["authorization"])
    onbehalf.set_context(user.token, agent="support-bot", tier="interactive")

``onbehalf.autogen`` holds the AutoGen 0.4+ integration (``GovernedWorkbench``, ``governed_handoff``).
"""

from .bindings import Binding, clear_context, configure, default_client, set_context, verify
from .client import Client
from .context import Frame, RunContext, current
from .decisions import Decision, Principal
from .errors import (
    ApprovalRequired,
    ConfigurationError,
    Denied,
    OnbehalfError,
    Unauthenticated,
    Unavailable,
)
from .governed import governed
from .spool import ReplayResult

__version__ = "0.1.0"

__all__ = [
    "ApprovalRequired",
    "Binding",
    "Client",
    "ConfigurationError",
    "Decision",
    "Denied",
    "Frame",
    "OnbehalfError",
    "Principal",
    "ReplayResult",
    "RunContext",
    "Unauthenticated",
    "Unavailable",
    "clear_context",
    "configure",
    "current",
    "default_client",
    "governed",
    "set_context",
    "verify",
]
