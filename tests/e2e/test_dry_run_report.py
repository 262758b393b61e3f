"""What a dry run reports: the README's "what would have been sent is counted and logged".

A batch dry run (``DELIVERY_DRY_RUN=true``, ``DELIVERY_STOP_WHEN_IDLE_SECONDS``) over the
sample events, against the real broker and the Button sandbox: nothing reaches the sandbox,
and once the run has stopped its ``stopped`` line says what it did: the records finished by
outcome, and the requests it would have sent by action, as the pure mapping makes them. With
``LOG_SUCCESS_SAMPLE_RATE=1`` every record's ``record`` line names its action and order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from consumer.bootstrap import mapping_config
from consumer.commands import produce_events
from consumer.domain import mapping
from consumer.domain.button import Read, Reject, Send, Skip
from consumer.domain.events import CommerceEvent
from consumer.domain.profile import Profile
from consumer.settings import Settings
from tests.e2e.harness import end_offsets, past_events, wait_until

pytestmark = pytest.mark.broker

PARTITIONS = 3


def dry_run_oracle(
    events: Iterable[CommerceEvent], settings: Settings
) -> tuple[Counter[str], Counter[str]]:
    """The outcome of each record of a dry run, and the action of each request it would send,
    from the pure mapping, per user in order (a dry run reads nothing: a ``Read`` is its
    ``held`` decision)."""
    config = mapping_config(settings)
    now = datetime.now(UTC)
    profiles: dict[str, Profile] = {}
    outcomes: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    for event in events:
        result, updated = mapping.process(event, profiles.get(event.user_key), config, now)
        if updated is not None:
            profiles[event.user_key] = updated
        decided = result.held if isinstance(result, Read) else result
        match decided:
            case Send(request=request):
                outcomes["dry_run"] += 1
                actions[request.action.value] += 1
            case Skip():
                outcomes["skipped"] += 1
            case Reject():
                outcomes["dead_lettered"] += 1
    return outcomes, actions


def test_a_batch_dry_run_says_what_it_would_have_sent_when_it_stops(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Nothing reaches Button; the ``stopped`` line counts the records by outcome and the
    requests the run would have sent by action, exactly as the mapping makes them; and each
    request is in a ``record`` line (outcome ``dry_run``, its action and order id)."""
    topic = make_topic(partitions=PARTITIONS, prefix="dryrun-report")
    settings = service_settings(
        topic,
        DELIVERY_DRY_RUN="true",
        DELIVERY_STOP_WHEN_IDLE_SECONDS="1",
        LOG_SUCCESS_SAMPLE_RATE="1",
        LOG_LEVEL="info",
    )
    events = past_events(40, seed=71)
    outcomes, actions = dry_run_oracle(events, settings)
    assert all(actions[a] for a in ("create", "update", "cancel")), actions
    produce_events(settings, events, partitions=PARTITIONS)
    assert sum(end_offsets(kafka_bootstrap, topic, PARTITIONS).values()) == len(events)

    with capture_logs() as logs:
        runner = start_service(settings)
        wait_until(runner.exited, 120, interval=0.2, message="the batch dry run did not stop")
        runner.stop()

    assert sandbox.orders() == [], "the dry run sent something"
    assert sandbox.stats()["requests"] == 0, "the dry run sent something"
    stopped = [e for e in logs if e["event"] == "stopped"]
    assert len(stopped) == 1, stopped
    line = stopped[0]
    finished = {outcome: count for outcome, count in line["outcomes"].items() if count}
    assert (line["received"], line["dry_run"], finished, line["would_send"]) == (
        len(events),
        True,
        dict(outcomes),
        dict(actions),
    )
    records = [e for e in logs if e["event"] == "record" and e["outcome"] == "dry_run"]
    assert Counter(e["action"] for e in records) == actions
    assert all(e["order_id"] for e in records)
