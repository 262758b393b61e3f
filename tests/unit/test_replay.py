"""replay-dlq without a broker: the filter, the replayed headers, time flags and pacing."""

from __future__ import annotations

import pytest

from consumer.domain.deadletter import header_map
from consumer.errors import ConfigError
from consumer.replay import ReplayFilter, _parse_time, _Rate, replay_headers

AT = 1_714_572_202_000


def dead_letter(**headers: str) -> dict[str, str]:
    base = {
        "button.reason": "http_400",
        "button.order.id": "ORD-1",
        "button.dead.lettered.ms": str(AT),
    }
    base.update(headers)
    return base


class FakeTime:
    """A monotonic clock that moves only when ``sleep`` is called; records the sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- ReplayFilter ------------------------------------------------------------------------------


def test_empty_filter_matches_everything() -> None:
    """No criterion: every dead letter is replayed, even one without headers."""
    selection = ReplayFilter()

    assert [selection.matches(dead_letter()), selection.matches({})] == [True, True]


def test_reasons_filter_keeps_only_those_reasons() -> None:
    """--reason keeps dead letters whose button.reason is one of the given reasons."""
    selection = ReplayFilter(reasons=frozenset({"retries_exhausted", "parked"}))

    expected = [True, True, False, False]
    actual = [
        selection.matches(dead_letter(**{"button.reason": "retries_exhausted"})),
        selection.matches(dead_letter(**{"button.reason": "parked"})),
        selection.matches(dead_letter(**{"button.reason": "http_400"})),
        selection.matches({}),
    ]
    assert expected == actual


def test_order_ids_filter_keeps_only_those_orders() -> None:
    """--order-id keeps dead letters of the given orders only."""
    selection = ReplayFilter(order_ids=frozenset({"ORD-2"}))

    expected = [True, False]
    actual = [
        selection.matches(dead_letter(**{"button.order.id": "ORD-2"})),
        selection.matches(dead_letter(**{"button.order.id": "ORD-1"})),
    ]
    assert expected == actual


def test_since_is_inclusive_and_until_is_exclusive() -> None:
    """[since, until) by button.dead.lettered.ms: the start is in, the end is out."""
    selection = ReplayFilter(since_ms=AT, until_ms=AT + 1_000)

    expected = [False, True, True, False]
    actual = [
        selection.matches(dead_letter(**{"button.dead.lettered.ms": str(at)}))
        for at in (AT - 1, AT, AT + 999, AT + 1_000)
    ]
    assert expected == actual


def test_a_time_window_excludes_letters_without_a_readable_time() -> None:
    """With since or until set, a missing or non-numeric dead-lettered time does not match."""
    since = ReplayFilter(since_ms=0)
    until = ReplayFilter(until_ms=AT * 2)
    no_time = {"button.reason": "http_400"}
    bad_time = dead_letter(**{"button.dead.lettered.ms": "yesterday"})

    expected = [False, False, False, False]
    actual = [
        since.matches(no_time),
        since.matches(bad_time),
        until.matches(no_time),
        until.matches(bad_time),
    ]
    assert expected == actual


def test_every_criterion_must_match() -> None:
    """Reason, order and time are combined with AND."""
    selection = ReplayFilter(
        reasons=frozenset({"http_400"}), order_ids=frozenset({"ORD-1"}), since_ms=AT + 1
    )

    assert not selection.matches(dead_letter())


# --- replay_headers ----------------------------------------------------------------------------


def test_replay_headers_keep_the_source_headers_and_add_where_it_came_from() -> None:
    """Own headers are stripped; button.replayed and button.replayed.parked are appended."""
    headers = [
        ("trace-id", b"t-1"),
        ("__connect.errors.topic", b"commerce-events"),
        ("button.reason", b"http_400"),
        ("button.parked", b"false"),
        ("content-type", b"avro"),
    ]

    expected = [
        ("trace-id", b"t-1"),
        ("content-type", b"avro"),
        ("button.replayed", b"1:42"),
        ("button.replayed.parked", b"false"),
    ]
    assert expected == replay_headers(headers, "1:42")


def test_replay_headers_carry_the_parked_flag_of_the_dead_letter() -> None:
    """A parked dead letter is replayed with button.replayed.parked=true."""
    headers = [("button.parked", b"true")]

    assert header_map(replay_headers(headers, "0:7"))["button.replayed.parked"] == "true"


def test_replay_headers_default_to_not_parked_without_the_flag() -> None:
    """A dead letter with no parked header is replayed as not parked (it releases its order)."""
    assert replay_headers([], "0:7") == [
        ("button.replayed", b"0:7"),
        ("button.replayed.parked", b"false"),
    ]


def test_a_second_replay_replaces_the_first_replay_headers() -> None:
    """Replaying a record dead-lettered again after a replay keeps one set of replay headers."""
    headers = [
        ("trace-id", b"t-1"),
        ("button.replayed", b"0:7"),
        ("button.replayed.parked", b"false"),
        ("button.parked", b"true"),
    ]

    expected = [
        ("trace-id", b"t-1"),
        ("button.replayed", b"0:9"),
        ("button.replayed.parked", b"true"),
    ]
    assert expected == replay_headers(headers, "0:9")


# --- _parse_time -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T14:03:22Z", 1_714_572_202_000),
        ("2024-05-01T16:03:22+02:00", 1_714_572_202_000),
        ("2024-05-01T14:03:22", 1_714_572_202_000),
        ("2024-05-01T14:03:22.5Z", 1_714_572_202_500),
    ],
)
def test_parse_time_reads_iso_8601_as_utc_milliseconds(value: str, expected: int) -> None:
    """Z and offsets are honoured; a time without an offset is taken as UTC."""
    assert expected == _parse_time(value, "--since")


def test_parse_time_of_no_value_is_no_bound() -> None:
    """An absent flag means no bound."""
    assert _parse_time(None, "--since") is None


@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_parse_time_error_names_the_flag(flag: str) -> None:
    """A value that is not ISO-8601 raises ConfigError naming the flag and the value."""
    with pytest.raises(ConfigError) as raised:
        _parse_time("last tuesday", flag)

    assert f"{flag}: not an ISO-8601 time: 'last tuesday'" == str(raised.value)


# --- _Rate -------------------------------------------------------------------------------------


def test_rate_lets_the_first_record_through_at_once() -> None:
    """The first record of a replay does not wait."""
    fake = FakeTime()
    pacing = _Rate(2.0, clock=fake.clock, sleep=fake.sleep)

    pacing.wait()

    assert fake.sleeps == []


def test_rate_spaces_records_by_the_interval() -> None:
    """At 2 records/s, back-to-back records wait 0.5 s each after the first."""
    fake = FakeTime()
    pacing = _Rate(2.0, clock=fake.clock, sleep=fake.sleep)

    for _ in range(4):
        pacing.wait()

    assert fake.sleeps == [0.5, 0.5, 0.5]


def test_rate_does_not_wait_when_the_caller_is_already_slower() -> None:
    """Time spent producing counts: a record due in the past is sent without a sleep."""
    fake = FakeTime()
    pacing = _Rate(2.0, clock=fake.clock, sleep=fake.sleep)

    pacing.wait()
    fake.now += 2.0
    pacing.wait()

    assert fake.sleeps == []


def test_rate_does_not_save_up_a_burst_after_an_idle_gap() -> None:
    """After a long gap the schedule restarts from now: the next records are paced again."""
    fake = FakeTime()
    pacing = _Rate(2.0, clock=fake.clock, sleep=fake.sleep)

    pacing.wait()
    fake.now += 10.0
    pacing.wait()
    pacing.wait()

    assert fake.sleeps == [0.5]


def test_rate_of_zero_does_not_pace() -> None:
    """A non-positive rate means no pacing (the CLI refuses it before it gets here)."""
    fake = FakeTime()
    pacing = _Rate(0.0, clock=fake.clock, sleep=fake.sleep)

    for _ in range(3):
        pacing.wait()

    assert fake.sleeps == []
