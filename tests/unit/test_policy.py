"""The failure table, row by row, and the retry budget around it."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.devtools import policy_table
from consumer.domain.button import Action, ButtonRequest, Read, Reject, Send, Skip
from consumer.domain.deadletter import Stage
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.domain.policy import (
    Decision,
    Parks,
    Probe,
    RetryPolicy,
    Verdict,
    breaker_signal,
    breaker_wait,
    classify,
    decide,
    decide_error,
    decide_mapped,
    judge_probe,
    judge_read,
)
from consumer.errors import (
    BrokerError,
    DeadLetterError,
    DecodeError,
    InvalidEventError,
    MappingError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
)

K = OutcomeKind
A = Action
DONE, RETRY, DEAD, PAUSE = Verdict.DONE, Verdict.RETRY, Verdict.DEAD_LETTER, Verdict.PAUSE
BREAK = Verdict.BREAK


class FixedRandom:
    """A random source that always returns the same draw."""

    def __init__(self, value: float = 0.5) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def outcome(
    kind: OutcomeKind,
    status: int | None = None,
    message: str = "",
    retry_after: float | None = None,
    *,
    button: bool = False,
) -> ButtonOutcome:
    """An outcome; ``button``: its body was Button's own JSON envelope."""
    return ButtonOutcome(kind, status, message=message, retry_after=retry_after, from_button=button)


# (action, outcome, expected verdict, expected reason): the table of DESIGN decision 4.
TABLE = [
    (A.CREATE, outcome(K.SUCCESS, 200), DONE, "ok"),
    (A.UPDATE, outcome(K.SUCCESS, 202), DONE, "ok"),
    (A.CANCEL, outcome(K.SUCCESS, 200), DONE, "ok"),
    (A.CREATE, outcome(K.CONFLICT, 409), DONE, "order_exists"),
    (A.UPDATE, outcome(K.CONFLICT, 409), DEAD, "http_409"),
    (A.CANCEL, outcome(K.NOT_FOUND, 404, button=True), DONE, "order_gone"),
    (A.UPDATE, outcome(K.NOT_FOUND, 404, button=True), Verdict.VERIFY, "http_404"),
    (A.CREATE, outcome(K.NOT_FOUND, 404, button=True), DEAD, "http_404"),
    # A 404 page from in front of Button says nothing about the order: never done, never read.
    (A.CANCEL, outcome(K.NOT_FOUND, 404), DEAD, "http_404"),
    (A.UPDATE, outcome(K.NOT_FOUND, 404), DEAD, "http_404"),
    (A.CREATE, outcome(K.NOT_FOUND, 404), DEAD, "http_404"),
    (
        A.UPDATE,
        outcome(K.FORBIDDEN, 403, "Order is finalized", button=True),
        DONE,
        "order_finalized",
    ),
    (A.CANCEL, outcome(K.FORBIDDEN, 403, "Order finalised", button=True), DONE, "order_finalized"),
    (
        A.UPDATE,
        outcome(K.INVALID, 400, "order already finalized", button=True),
        DONE,
        "order_finalized",
    ),
    # A 403 that is not Button's envelope saying "finalized" never finishes a record.
    (A.UPDATE, outcome(K.FORBIDDEN, 403, "HTTP 403"), PAUSE, "http_403"),
    (A.CANCEL, outcome(K.FORBIDDEN, 403, "HTTP 403"), PAUSE, "http_403"),
    (A.CANCEL, outcome(K.FORBIDDEN, 403, "Forbidden", button=True), PAUSE, "http_403"),
    (A.UPDATE, outcome(K.FORBIDDEN, 403, "Order is finalized"), PAUSE, "http_403"),
    (A.UPDATE, outcome(K.FORBIDDEN, 403, message="Invalid API key"), PAUSE, "http_403"),
    (A.CREATE, outcome(K.FORBIDDEN, 403, message="NoMerchantApproval"), PAUSE, "http_403"),
    (A.CREATE, outcome(K.UNAUTHORIZED, 401), PAUSE, "http_401"),
    (A.CANCEL, outcome(K.UNAUTHORIZED, 401), PAUSE, "http_401"),
    (A.CREATE, outcome(K.RATE_LIMITED, 429, retry_after=2.0), RETRY, "http_429"),
    (A.CREATE, outcome(K.SERVER_ERROR, 503), RETRY, "http_503"),
    (A.UPDATE, outcome(K.SERVER_ERROR, 500), RETRY, "http_500"),
    (A.CREATE, outcome(K.CLIENT_ERROR, 408), RETRY, "http_408"),
    (A.CREATE, outcome(K.TIMEOUT), RETRY, "timeout"),
    (A.CANCEL, outcome(K.CONNECTION_ERROR), RETRY, "connection_error"),
    (A.CREATE, outcome(K.UNREADABLE, 200), RETRY, "unreadable_response"),
    (A.CREATE, outcome(K.INVALID, 400, message="total must be an integer"), DEAD, "http_400"),
    (A.CANCEL, outcome(K.INVALID, 400), DEAD, "http_400"),
    (A.CREATE, outcome(K.CLIENT_ERROR, 422), DEAD, "http_422"),
    (A.UPDATE, outcome(K.CLIENT_ERROR, 410), DEAD, "http_410"),
]


@pytest.mark.parametrize(("action", "result", "verdict", "reason"), TABLE)
def test_table_row(action: Action, result: ButtonOutcome, verdict: Verdict, reason: str) -> None:
    """Each (action, outcome) pair maps to exactly the verdict and reason of the design."""
    decision = classify(action, result)
    assert (verdict, reason) == (decision.verdict, decision.reason)


def test_conflict_on_a_create_with_a_follow_up_sends_the_update() -> None:
    """Issue 9: a create answered 409 that carries the update of its full state sends it (Button
    may hold another state of the order); without one, a 409 on create is done."""
    conflict = outcome(K.CONFLICT, 409, "Order already exists", button=True)
    with_follow_up = classify(A.CREATE, conflict, follow_up=True)
    decided = decide(
        A.CREATE,
        conflict,
        attempt=1,
        elapsed=0.0,
        policy=RetryPolicy(),
        rng=FixedRandom(),
        follow_up=True,
    )
    assert (with_follow_up.verdict, with_follow_up.reason) == (
        Verdict.FOLLOW_UP,
        "order_exists_update",
    )
    assert decided == with_follow_up
    assert classify(A.CREATE, conflict).verdict is DONE
    # Only a 409 on a create sends the follow-up: every other answer keeps its row.
    assert classify(A.CREATE, outcome(K.SUCCESS, 200), follow_up=True).reason == "ok"
    assert classify(A.UPDATE, conflict, follow_up=True).reason == "http_409"


def test_finalized_is_noteworthy() -> None:
    """A finalized order is done, but the operator should hear about it."""
    finalized = outcome(K.FORBIDDEN, 403, "Order is finalized", button=True)
    assert classify(A.UPDATE, finalized).noteworthy is True
    assert classify(A.CREATE, outcome(K.SUCCESS, 200)).noteworthy is False


@pytest.mark.parametrize("action", [A.SKIP, A.REJECT])
def test_non_requests_are_refused(action: Action) -> None:
    """Skip and reject never reach Button, so they have no row."""
    with pytest.raises(ValueError, match="not sent"):
        classify(action, outcome(K.SUCCESS, 200))


POLICY = RetryPolicy(max_attempts=4, max_elapsed=60.0, base_delay=1.0, max_delay=8.0)


def test_retry_delay_is_jittered_exponential() -> None:
    """The third failed attempt waits draw * min(cap, base * 4)."""
    decision = decide(
        A.CREATE,
        outcome(K.SERVER_ERROR, 503),
        attempt=3,
        elapsed=5.0,
        policy=POLICY,
        rng=FixedRandom(0.5),
    )
    assert Decision(RETRY, "http_503", delay=2.0) == decision


def test_retry_after_is_honoured_as_a_minimum() -> None:
    """A 429 waits at least Retry-After."""
    decision = decide(
        A.CREATE,
        outcome(K.RATE_LIMITED, 429, retry_after=7.0),
        attempt=1,
        elapsed=0.0,
        policy=POLICY,
        rng=FixedRandom(0.5),
    )
    assert decision.delay == 7.0


def test_attempt_budget_turns_retry_into_dead_letter() -> None:
    """After max_attempts, a retryable failure is dead-lettered, naming the last cause."""
    decision = decide(
        A.CREATE,
        outcome(K.TIMEOUT),
        attempt=4,
        elapsed=1.0,
        policy=POLICY,
        rng=FixedRandom(),
    )
    expected = Decision(
        DEAD,
        "retries_exhausted",
        cause="timeout",
        outcome="dead_lettered",
        stage=Stage.DELIVER,
        error_class="ButtonTimeout",
        detail="timeout after retries: timeout",
        parks=Parks.ORDER,
    )
    assert expected == decision


def test_elapsed_budget_turns_retry_into_dead_letter() -> None:
    """A retry that would start after max_elapsed is not scheduled."""
    decision = decide(
        A.UPDATE,
        outcome(K.RATE_LIMITED, 429),
        attempt=1,
        elapsed=59.9,
        policy=POLICY,
        rng=FixedRandom(),
    )
    assert (
        decision.verdict,
        decision.reason,
        decision.cause,
    ) == (DEAD, "retry_deadline", "http_429")


def test_pause_ignores_the_budget() -> None:
    """A refused key pauses even when the retry budget is spent: the record is kept."""
    decision = decide(
        A.CREATE,
        outcome(K.UNAUTHORIZED, 401),
        attempt=99,
        elapsed=9_999.0,
        policy=POLICY,
        rng=FixedRandom(),
    )
    assert decision.verdict is PAUSE


def test_done_and_dead_letter_ignore_the_budget() -> None:
    """Non-retryable outcomes are returned as the table says, with no delay."""
    for result, expected in [
        (outcome(K.SUCCESS, 200), Decision(DONE, "ok", outcome="delivered")),
        (
            outcome(K.INVALID, 400, message="total must be an integer"),
            Decision(
                DEAD,
                "http_400",
                outcome="dead_lettered",
                stage=Stage.DELIVER,
                error_class="ButtonInvalid",
                detail="total must be an integer",
                parks=Parks.ORDER,
            ),
        ),
    ]:
        actual = decide(A.CREATE, result, attempt=1, elapsed=0.0, policy=POLICY, rng=FixedRandom())
        assert expected == actual


def test_retry_policy_validates() -> None:
    """Zero attempts is not a policy."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


REQUEST = ButtonRequest(A.CREATE, "POST", "/v1/order", "o-1")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (Send(REQUEST), Decision(Verdict.SEND, "send")),
        (Skip("not_an_order"), Decision(DONE, "not_an_order", outcome="skipped")),
        (
            Reject("missing_order_id", "no transaction_id"),
            Decision(
                DEAD,
                "missing_order_id",
                outcome="dead_lettered",
                stage=Stage.MAP,
                error_class="MappingError",
                detail="no transaction_id",
            ),
        ),
        (
            Reject(""),
            Decision(
                DEAD,
                "mapping_rejected",
                outcome="dead_lettered",
                stage=Stage.MAP,
                error_class="MappingError",
                detail="mapping_rejected",
            ),
        ),
    ],
)
def test_map_results(result: Send | Skip | Reject, expected: Decision) -> None:
    """Skips finish the record, rejects dead-letter it, sends go to Button."""
    assert expected == decide_mapped(result, parked=None, dry_run=False)


def test_dry_run_finishes_what_would_be_sent() -> None:
    """In a dry run a request is finished as ``dry_run``; skips and rejects are unchanged."""
    expected = (
        Decision(DONE, "dry_run", outcome="dry_run"),
        Decision(DONE, "not_an_order", outcome="skipped"),
    )
    actual = (
        decide_mapped(Send(REQUEST), parked=None, dry_run=True),
        decide_mapped(Skip("not_an_order"), parked=None, dry_run=True),
    )
    assert expected == actual


def test_a_dry_run_dead_letters_a_keyless_refund_it_cannot_hold() -> None:
    """A dry run reads nothing and keeps the ``Read``'s ``held`` decision: for a record
    without a key that is the reject (no profile to hold the refund in), not a skip."""
    read = ButtonRequest(Action.READ, "GET", "/v1/order/ORD-1", "ORD-1")
    held = Reject("keyless_refund_before_purchase", "no key")

    decision = decide_mapped(Read(read, held), parked=None, dry_run=True)

    assert (decision.verdict, decision.reason, decision.detail) == (
        DEAD,
        "keyless_refund_before_purchase",
        "no key",
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DecodeError("bad_magic_byte", "x"), (DEAD, "bad_magic_byte", Stage.DECODE)),
        (UnknownSchemaError("unknown_schema_id", "x"), (DEAD, "unknown_schema_id", Stage.DECODE)),
        (MappingError("bad_currency", "x"), (DEAD, "bad_currency", Stage.MAP)),
        (DeadLetterError("dlq down"), (Verdict.STOP, "dlq_unavailable", None)),
        (BrokerError("fatal"), (Verdict.STOP, "broker_error", None)),
        (KeyError("bug"), (Verdict.STOP, "unexpected_error", None)),
    ],
)
def test_errors_outside_the_call(
    error: BaseException, expected: tuple[Verdict, str, Stage | None]
) -> None:
    """Poison records go to the DLQ; a broken DLQ, Kafka or an unknown error stops consuming."""
    decision = decide_error(error)
    assert expected == (decision.verdict, decision.reason, decision.stage)


def test_poison_records_name_their_error() -> None:
    """A dead letter for an error carries the exception's class and message."""
    decision = decide_error(UnknownSchemaError("unknown_schema_id", "schema id 7 is unknown"))
    expected = ("dead_lettered", "UnknownSchemaError", "schema id 7 is unknown")
    assert expected == (decision.outcome, decision.error_class, decision.detail)


def test_unexpected_errors_name_their_class() -> None:
    """An error the service did not expect stops consuming and names its class."""
    assert decide_error(KeyError("bug")).cause == "KeyError"


def test_registry_outage_is_waited_for_without_a_budget() -> None:
    """An unreachable schema registry is retried after 0.5, 1, 2... seconds, capped at 30."""
    outage = SchemaRegistryUnavailableError("registry: connection refused")
    delays = [decide_error(outage, attempt=n).delay for n in (1, 2, 3, 7, 8, 1000)]
    verdicts = {decide_error(outage, attempt=n).verdict for n in (1, 1000)}
    assert ([0.5, 1.0, 2.0, 30.0, 30.0, 30.0], {RETRY}) == (delays, verdicts)


def test_parked_records_are_dead_lettered_as_parked() -> None:
    """A record parked behind an earlier dead letter goes to the DLQ, never to Button."""
    decision = decide_mapped(Send(REQUEST), parked="http_400", dry_run=True)
    expected = (
        DEAD,
        "parked",
        True,
        Stage.DELIVER,
        "order o-1 is parked behind a dead letter (http_400)",
    )
    assert expected == (
        decision.verdict,
        decision.reason,
        decision.parked,
        decision.stage,
        decision.detail,
    )


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (decide_error(DecodeError("truncated", "x")), (DEAD, Parks.KEY)),
        (decide_error(UnknownSchemaError("unknown_schema", "x")), (DEAD, Parks.KEY)),
        (decide_error(DecodeError("null_value", "x")), (DEAD, Parks.NOTHING)),
        (decide_error(DecodeError("empty", "x")), (DEAD, Parks.NOTHING)),
        (decide_error(InvalidEventError("negative_amount", "x")), (DEAD, Parks.NOTHING)),
        (decide_error(MappingError("invalid_amount", "x")), (DEAD, Parks.NOTHING)),
        (
            decide_mapped(Reject("unknown_currency"), parked=None, dry_run=False),
            (DEAD, Parks.NOTHING),
        ),
        (
            decide(
                A.CREATE,
                outcome(K.INVALID, 400),
                attempt=1,
                elapsed=0.0,
                policy=POLICY,
                rng=FixedRandom(),
            ),
            (DEAD, Parks.ORDER),
        ),
        (
            decide(
                A.UPDATE,
                outcome(K.TIMEOUT),
                attempt=4,
                elapsed=1.0,
                policy=POLICY,
                rng=FixedRandom(),
            ),
            (DEAD, Parks.ORDER),
        ),
        (decide_mapped(Send(REQUEST), parked="http_400", dry_run=False), (DEAD, Parks.ORDER)),
    ],
)
def test_what_each_kind_of_dead_letter_parks(
    decision: Decision, expected: tuple[Verdict, Parks]
) -> None:
    """A delivery failure parks its order, undecodable bytes their key; a dead letter decided
    by the event's own data (a rejection, an invalid event) and a tombstone park nothing."""
    assert expected == (decision.verdict, decision.parks)


def test_a_record_of_a_parked_order_is_parked_whatever_the_mapping_says() -> None:
    """Rejected or skipped with a profile change (a refund held for its purchase), a record of
    a parked order is parked; a skip that changes nothing is finished."""

    def decided(result: Skip | Reject, *, changes: bool = False) -> tuple[str, str]:
        decision = decide_mapped(
            result, parked="http_400", dry_run=False, order_id="o-1", changes=changes
        )
        return decision.outcome, decision.detail

    expected = [
        ("parked", "order o-1 is parked behind a dead letter (http_400)"),
        ("parked", "order o-1 is parked behind a dead letter (http_400)"),
        ("skipped", ""),
    ]
    actual = [
        decided(Reject("refund_exceeds_quantity")),
        decided(Skip("refund_held"), changes=True),
        decided(Skip("development_event")),
    ]
    assert expected == actual


RETRYABLE = [K.RATE_LIMITED, K.SERVER_ERROR, K.TIMEOUT, K.CONNECTION_ERROR, K.UNREADABLE]


@given(
    kind=st.sampled_from(RETRYABLE),
    action=st.sampled_from([A.CREATE, A.UPDATE, A.CANCEL]),
    attempt=st.integers(min_value=1, max_value=20),
    elapsed=st.floats(min_value=0, max_value=400, allow_nan=False),
    retry_after=st.none() | st.floats(min_value=0, max_value=120, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_retries_always_respect_both_budgets(
    kind: OutcomeKind,
    action: Action,
    attempt: int,
    elapsed: float,
    retry_after: float | None,
    seed: int,
) -> None:
    """A retry is only scheduled within max_attempts and max_elapsed, never before Retry-After."""
    policy = RetryPolicy()
    decision = decide(
        action,
        outcome(kind, 503 if kind is K.SERVER_ERROR else None, retry_after=retry_after),
        attempt=attempt,
        elapsed=elapsed,
        policy=policy,
        rng=random.Random(seed),
    )
    if decision.verdict is BREAK:
        # 429/503 with Retry-After: back-pressure, the budget does not apply; capped.
        assert retry_after is not None
        assert decision.delay == min(retry_after, policy.retry_after_cap)
    elif decision.verdict is RETRY:
        assert attempt < policy.max_attempts
        assert elapsed + decision.delay <= policy.max_elapsed
        assert decision.delay >= (retry_after or 0.0)
    else:
        assert decision.verdict is DEAD
        assert decision.reason in {"retries_exhausted", "retry_deadline"}


def test_readme_table_is_rendered_from_the_policy() -> None:
    """The README's failure table is exactly what the policy functions answer today."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert policy_table.render() in readme


# --- faults on Button's side: 403s, the probe, back-pressure and outages -------------------------


def test_a_403_after_the_probe_accepted_the_key_is_the_records_own() -> None:
    """Once a record-independent probe showed the key works, Button's own 403 dead-letters the
    record (http_403); a 403 page from in front of Button is retried within the budget."""
    button = classify(
        A.CREATE, outcome(K.FORBIDDEN, 403, "Forbidden", button=True), key_accepted=True
    )
    proxy = classify(A.UPDATE, outcome(K.FORBIDDEN, 403, "HTTP 403"), key_accepted=True)

    assert (button.verdict, button.reason, proxy.verdict, proxy.reason) == (
        DEAD,
        "http_403",
        RETRY,
        "http_403",
    )


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (outcome(K.NOT_FOUND, 404, "Order not found", button=True), Probe.ACCEPTED),
        (outcome(K.SUCCESS, 200, button=True), Probe.ACCEPTED),
        (outcome(K.NOT_FOUND, 404, "HTTP 404"), Probe.UNAVAILABLE),  # not Button's answer
        (outcome(K.UNAUTHORIZED, 401, "Invalid api_key", button=True), Probe.REFUSED),
        (outcome(K.FORBIDDEN, 403, "HTTP 403"), Probe.REFUSED),
        (outcome(K.SERVER_ERROR, 503, "Service unavailable", button=True), Probe.UNAVAILABLE),
        (outcome(K.RATE_LIMITED, 429, button=True, retry_after=5.0), Probe.UNAVAILABLE),
        (outcome(K.TIMEOUT), Probe.UNAVAILABLE),
    ],
)
def test_only_buttons_own_answer_accepts_a_probe(result: ButtonOutcome, expected: Probe) -> None:
    """The probe (a read of an unknown order) is accepted on Button's envelope only."""
    assert expected == judge_probe(result)


@pytest.mark.parametrize(
    ("result", "retry_after"),
    [
        (outcome(K.RATE_LIMITED, 429), 60.0),
        (outcome(K.SERVER_ERROR, 503), 600.0),  # an HTTP-date ten minutes ahead
    ],
)
def test_retry_after_on_429_and_503_opens_the_breaker_capped(
    result: ButtonOutcome, retry_after: float
) -> None:
    """429 or 503 with Retry-After is back-pressure, whatever the budget left: BREAK for the
    Retry-After, capped (never retry_deadline, never a dead letter)."""
    policy = RetryPolicy(max_attempts=1, max_elapsed=30.0, retry_after_cap=45.0)
    decision = decide(
        A.CREATE,
        replace(result, retry_after=retry_after),
        attempt=5,
        elapsed=29.0,
        policy=policy,
        rng=FixedRandom(),
    )
    assert (decision.verdict, decision.delay) == (BREAK, min(retry_after, 45.0))


def test_an_exhausted_budget_during_an_outage_opens_the_breaker() -> None:
    """When the breaker counts an outage, a spent budget pauses (button_unavailable) with the
    last failure as the cause; without an outage it is a dead letter."""
    args = {"attempt": 4, "elapsed": 1.0, "policy": POLICY, "rng": FixedRandom()}
    during = decide(A.CREATE, outcome(K.TIMEOUT), outage=True, **args)  # type: ignore[arg-type]
    alone = decide(A.CREATE, outcome(K.TIMEOUT), outage=False, **args)  # type: ignore[arg-type]

    assert (during.verdict, during.reason, during.cause) == (BREAK, "button_unavailable", "timeout")
    assert (alone.verdict, alone.reason) == (DEAD, "retries_exhausted")


def test_breaker_signal_counts_failures_and_buttons_answers() -> None:
    """Failures of Button or the path count; Button's envelope ends the count; a proxy's 403
    page is neither."""
    assert [
        breaker_signal(outcome(K.SERVER_ERROR, 502)),
        breaker_signal(outcome(K.CONNECTION_ERROR)),
        breaker_signal(outcome(K.INVALID, 400, "bad", button=True)),
        breaker_signal(outcome(K.SUCCESS, 200)),
        breaker_signal(outcome(K.FORBIDDEN, 403, "HTTP 403")),
    ] == [True, True, False, False, None]


def test_breaker_wait_after_a_probe() -> None:
    """After a probe: None (close) when Button answered; else the interval or the capped
    Retry-After."""
    policy = RetryPolicy(retry_after_cap=30.0)
    waits = [
        breaker_wait(outcome(K.NOT_FOUND, 404, button=True), interval=5.0, policy=policy),
        breaker_wait(outcome(K.UNAUTHORIZED, 401, button=True), interval=5.0, policy=policy),
        breaker_wait(outcome(K.SERVER_ERROR, 503), interval=5.0, policy=policy),
        breaker_wait(outcome(K.RATE_LIMITED, 429, retry_after=600.0), interval=5.0, policy=policy),
    ]
    assert waits == [None, None, 5.0, 30.0]


UPDATE_404 = outcome(K.NOT_FOUND, 404, "Order is deleted: O-1", button=True)


def read(status: str) -> ButtonOutcome:
    """Button's answer to ``GET /v1/order/{id}`` for an order in ``status``."""
    return ButtonOutcome(K.SUCCESS, 200, object={"status": status}, from_button=True)


def judged(read: ButtonOutcome, **state: Any) -> Decision:
    """``judge_read`` of an update's 404 and ``read``, first attempt, nothing elapsed."""
    budget: dict[str, Any] = {"attempt": 1, "elapsed": 0.0} | state
    return judge_read(UPDATE_404, read, policy=RetryPolicy(), rng=FixedRandom(), **budget)


def test_an_update_answered_404_of_a_deleted_order_is_done() -> None:
    """Button holds the order deleted (final): the update has nothing left to change."""
    decision = judged(read("deleted"))

    assert (decision.verdict, decision.reason, decision.noteworthy, decision.outcome) == (
        DONE,
        "order_deleted",
        True,
        "delivered",
    )


@pytest.mark.parametrize(
    ("answer", "seen"),
    [
        (outcome(K.NOT_FOUND, 404, "Order not found: O-1", button=True), "Order not found: O-1"),
        (read("open"), "status open"),
        (read("finalized"), "status finalized"),
        (ButtonOutcome(K.SUCCESS, 200, object={"status": 3}, from_button=True), "success"),
    ],
)
def test_an_update_answered_404_of_an_order_not_deleted_is_its_dead_letter(answer, seen) -> None:
    """Button answers that it does not know the order, or holds it in another status: the
    update's 404 stands, and the dead letter says what the read found."""
    decision = judged(answer)

    assert (decision.verdict, decision.reason, decision.error_class, decision.detail) == (
        DEAD,
        "http_404",
        "ButtonNotFound",
        f"Order is deleted: O-1 (the order read: {seen})",
    )


@pytest.mark.parametrize(
    ("answer", "state", "expected"),
    [
        (outcome(K.SERVER_ERROR, 503), {}, (RETRY, "http_503")),
        (outcome(K.TIMEOUT), {}, (RETRY, "timeout")),
        (outcome(K.UNAUTHORIZED, 401, button=True), {}, (PAUSE, "http_401")),
        (outcome(K.RATE_LIMITED, 429, retry_after=30.0), {}, (BREAK, "http_429")),
        (outcome(K.NOT_FOUND, 404), {}, (DEAD, "http_404")),  # a proxy's page
        (outcome(K.SERVER_ERROR, 503), {"attempt": 8}, (DEAD, "retries_exhausted")),
    ],
)
def test_a_read_that_fails_is_decided_as_a_failed_attempt_of_the_update(
    answer, state, expected
) -> None:
    """A read that fails or is refused tells nothing about the order: the update's own policy
    applies to it (retry within the same budget, pause on a refused key, the breaker)."""
    decision = judged(answer, **state)

    assert (decision.verdict, decision.reason) == expected
