"""Reproduction (not a fix): a dry-run request written in another letter case starts a live run.

``Settings.from_env`` looks variables up by their exact upper-case name, and the near-miss guard
(``diagnose``/``unknown_variables``) only considers names that start with a setting's upper-case
prefix. So ``delivery_dry_run=true`` is neither read as DELIVERY_DRY_RUN nor refused as a
near-miss: the run is live and sends real orders, silently (no ``unknown_setting`` either).
"""

from __future__ import annotations

import pytest

from consumer.errors import ConfigError
from consumer.settings import Settings

LIVE = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "BUTTON_API_KEY": "sk-live-0123456789abcdef"}


@pytest.mark.xfail(
    strict=True,
    reason=(
        "defect: delivery_dry_run=true (another letter case) is ignored without a word and the "
        "run is live; README: a near-miss of DELIVERY_DRY_RUN that asks for a dry run stops "
        "the process at start"
    ),
)
@pytest.mark.parametrize("variable", ["delivery_dry_run", "Delivery_Dry_Run"])
def test_a_dry_run_asked_for_in_another_letter_case_is_never_a_silent_live_run(
    variable: str,
) -> None:
    """Either the run is a dry run, or the start is refused naming the variable."""
    refusal = ""
    try:
        dry_run = Settings.from_env({**LIVE, variable: "true"}).delivery.dry_run
    except ConfigError as refused:
        refusal, dry_run = str(refused), False
    assert dry_run or variable in refusal
