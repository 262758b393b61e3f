"""Typed outcomes of one Button API call. The client only tells; the failure policy decides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class OutcomeKind(StrEnum):
    """Every way a Button API call can end."""

    SUCCESS = "success"  # any 2xx with meta.status == "ok" (202 included)
    CONFLICT = "conflict"  # 409: order already exists
    NOT_FOUND = "not_found"  # 404
    INVALID = "invalid"  # 400, with Button's error.message
    UNAUTHORIZED = "unauthorized"  # 401
    FORBIDDEN = "forbidden"  # 403 (e.g. order finalized)
    RATE_LIMITED = "rate_limited"  # 429, with Retry-After parsed
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"  # connect/read/total timeout
    CONNECTION_ERROR = "connection_error"  # refused, reset, DNS
    UNREADABLE = "unreadable"  # body not JSON or not Button's envelope
    CLIENT_ERROR = "client_error"  # any other 4xx


@dataclass(frozen=True, slots=True)
class ButtonOutcome:
    """The result of one HTTP attempt against Button.

    ``message`` is Button's ``error.message`` (or the transport error), ``excerpt`` a short,
    PII-free prefix of the response body for the dead-letter headers, ``retry_after`` the parsed
    ``Retry-After`` in seconds, ``elapsed`` the attempt's wall time in seconds, without
    ``queued``: the seconds from handing it to the HTTP transport until the transport sent it
    (the wait for a slot under its concurrency cap, and the hand-over to its thread).
    ``from_button`` says the body was Button's own JSON envelope (``meta.status``): a proxy's,
    WAF's or CDN's HTML error page in front of Button is not, whatever its status.
    """

    kind: OutcomeKind
    status: int | None = None
    message: str = ""
    excerpt: str = ""
    retry_after: float | None = None
    elapsed: float = 0.0
    object: Mapping[str, Any] | None = None
    from_button: bool = False
    queued: float = 0.0

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.SUCCESS

    @property
    def order_status(self) -> str | None:
        """The ``status`` of the order a 2xx answer carries (``open``, ``finalized`` or
        ``deleted``, Button's order life cycle); ``None`` when it carries none."""
        status = (self.object or {}).get("status") if self.ok else None
        return status if isinstance(status, str) else None
