"""How counts read in what the service and its commands print: "1 partition", "3 partitions"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` with ``noun`` agreeing with it, thousands separated.

    Args:
        count: how many (any integer; only 1 takes the singular).
        noun: the singular (``"dead letter"``).
        plural: the plural when it is not ``noun + "s"`` (``"entries"``).

    Returns:
        ``"1 dead letter"``, ``"0 dead letters"``, ``"12,000 dead letters"``.
    """
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"
