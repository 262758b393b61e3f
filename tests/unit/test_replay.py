"""replay-dlq without a broker: the filter, the replayed headers, time flags, pacing, and what
is committed when some deliveries fail (fakes of the DLQ reader and the producer)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any

import pytest

from consumer import cli
from consumer.adapters.kafka_producer import ProduceError
from consumer.domain.deadletter import header_map
from consumer.errors import BrokerError, ConfigError, TopicError
from consumer.ports import Headers, Record
from consumer.replay import (
    ReplayFailure,
    ReplayFilter,
    ReplayReport,
    _parse_time,
    _Rate,
    input_lag,
    lagging,
    replay_from,
    replay_headers,
    summary_lines,
)

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


def test_replay_order_filter_ignores_padding() -> None:
    """``--order-id " B5 "`` selects the dead letters of ``B5``, and ``--order-id B5`` those an
    earlier release wrote with the padded id."""
    padded_arg = ReplayFilter(order_ids=frozenset({" B5 "}))
    plain_arg = ReplayFilter(order_ids=frozenset({"B5"}))

    assert [
        padded_arg.matches({"button.order.id": "B5"}),
        plain_arg.matches({"button.order.id": "B5\n"}),
        plain_arg.matches({"button.order.id": "b5"}),
    ] == [True, True, False]


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
    """Own headers are stripped; button.replayed, button.replayed.parked and the dead letter's
    reason (button.replayed.reason: a replay releases only the parking it made) are appended."""
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
        ("button.replayed.reason", b"http_400"),
    ]
    assert expected == replay_headers(headers, "1:42")


def test_replay_headers_carry_the_parked_flag_of_the_dead_letter() -> None:
    """A parked dead letter is replayed with button.replayed.parked=true."""
    headers = [("button.parked", b"true")]

    assert header_map(replay_headers(headers, "0:7"))["button.replayed.parked"] == "true"


def test_replay_headers_ask_a_first_dead_letter_to_release_its_key_with_release_keys() -> None:
    """``--release-keys``: a first dead letter carries button.replayed.release=true (if it fails
    to decode again, its key is released, not parked again); a parked one never does."""
    first = replay_headers([("button.parked", b"false")], "0:7", release_keys=True)
    parked = replay_headers([("button.parked", b"true")], "0:8", release_keys=True)

    assert first == [
        ("button.replayed", b"0:7"),
        ("button.replayed.parked", b"false"),
        ("button.replayed.release", b"true"),
    ]
    assert "button.replayed.release" not in header_map(parked)
    assert "button.replayed.release" not in header_map(replay_headers([], "0:9"))


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


class _ReplayedError(Exception):
    """Raised by the fake ``replay``: the command got past its argument checks."""


@pytest.fixture
def replay_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    """``replay`` replaced by one that raises ``_ReplayedError``; settings to load."""

    def fake_replay(*_args: object, **_kwargs: object) -> ReplayReport:
        raise _ReplayedError

    monkeypatch.setattr("consumer.replay.replay", fake_replay)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-12-03T00:00:00Z", "2026-12-01T00:00:00Z"),  # inverted
        ("2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z"),  # empty: until is exclusive
        ("2026-12-01T01:00:00+01:00", "2026-12-01T00:00:00"),  # the same instant, written apart
    ],
)
@pytest.mark.usefixtures("replay_reached")
def test_an_empty_or_inverted_time_window_is_a_usage_error_naming_both_options(
    capsys: pytest.CaptureFixture[str], since: str, until: str
) -> None:
    """``--since`` not before ``--until`` selects nothing: refused up front (exit 2, one line
    naming both options and their values), never a replay that quietly selects nothing."""
    assert cli.main(["replay-dlq", "--since", since, "--until", until]) == 2

    assert capsys.readouterr().err == (
        f"button-consumer: configuration error: --since must be before --until "
        f"({since!r} is not before {until!r}): the window selects no dead letter\n"
    )


@pytest.mark.parametrize(
    "window",
    [
        ["--since", "2026-12-01T00:00:00Z", "--until", "2026-12-01T00:00:00.001Z"],
        ["--since", "2026-12-03T00:00:00Z"],
        ["--until", "2026-12-01T00:00:00Z"],
        [],
    ],
)
@pytest.mark.usefixtures("replay_reached")
def test_a_time_window_that_can_select_something_is_replayed(window: list[str]) -> None:
    """A window of at least a millisecond, or open on one side, goes on to the replay."""
    with pytest.raises(_ReplayedError):
        cli.main(["replay-dlq", *window])


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


# --- replay_from: what is committed when deliveries fail ----------------------------------------


class FakeDeadLetters:
    """A DLQ of ``records[p]`` values per partition, read like ``PartitionReader`` reads it;
    ``commits`` records every commit of the replay group."""

    topic = "events.dlq"

    def __init__(
        self, records: Mapping[int, int], committed: Mapping[int, int] | None = None
    ) -> None:
        self._ends = dict(records)
        self._committed = dict(committed or {})
        self.commits: list[dict[int, int]] = []

    def partitions(self, timeout: float = 30.0) -> list[int]:
        return sorted(self._ends)

    def watermarks(self, partitions: Iterable[int], deadline: float) -> dict[int, tuple[int, int]]:
        return {p: (0, self._ends[p]) for p in partitions}

    def committed(self, partitions: Iterable[int], timeout: float = 30.0) -> dict[int, int | None]:
        return {p: self._committed.get(p) for p in partitions}

    def read(
        self, ranges: Mapping[int, tuple[int, int]], deadline: float | None = None
    ) -> Iterator[Record]:
        for p, (start, end) in sorted(ranges.items()):
            for offset in range(start, end):
                headers = [
                    ("__connect.errors.topic", b"events"),
                    ("__connect.errors.partition", str(p).encode()),
                    ("button.reason", b"http_400"),
                ]
                yield Record("events.dlq", p, offset, b"k", f"{p}:{offset}".encode(), None, headers)

    def commit(self, offsets: Mapping[int, int]) -> None:
        self.commits.append(dict(offsets))
        self._committed.update(offsets)


class FakeProducer:
    """Acknowledges every record except those tagged in ``refuse`` (cannot be queued: raises)
    and ``fail`` (queued, then a failed delivery report)."""

    def __init__(
        self, refuse: Iterable[tuple[int, int]] = (), fail: Iterable[tuple[int, int]] = ()
    ) -> None:
        self._refuse = set(refuse)
        self._fail = set(fail)
        self.sent: list[tuple[int, int]] = []
        self._errors: dict[Hashable, str] = {}

    def send_nowait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        tag: Hashable | None = None,
    ) -> None:
        assert isinstance(tag, tuple)
        if tag in self._refuse:
            raise ProduceError(f"produce to {topic} failed: Local: Unknown partition")
        self.sent.append(tag)
        if tag in self._fail:
            self._errors[tag] = "Broker: Topic authorization failed"

    def settle(self, timeout: float) -> int:
        return len(self._errors)

    def undelivered(self) -> dict[Hashable, str]:
        return dict(self._errors)


def run_replay(reader: FakeDeadLetters, producer: FakeProducer) -> ReplayReport:
    return replay_from(
        reader,
        producer,
        ReplayFilter(),
        default_topic="events",
        pacing=_Rate(0.0),
        out=io.StringIO(),
    )


def test_replay_commits_every_partition_to_its_end_when_all_are_acknowledged() -> None:
    """No failure: the group stands at each partition's end, the report lists no failure."""
    reader = FakeDeadLetters({0: 3, 1: 2})

    report = run_replay(reader, FakeProducer())

    assert reader.commits == [{0: 3, 1: 2}]
    assert (report.replayed, report.failures, report.committed) == (5, [], {0: 3, 1: 2})


def test_a_failed_delivery_stops_the_commit_of_its_partition_at_that_record() -> None:
    """A delivery report with an error at 0:1: partition 0 is committed up to 1 (0:1 and what
    follows are read again next time), partition 1 to its end; the failure is reported."""
    reader = FakeDeadLetters({0: 4, 1: 2})

    report = run_replay(reader, FakeProducer(fail=[(0, 1)]))

    assert reader.commits == [{0: 1, 1: 2}]
    assert [ReplayFailure(0, 1, "Broker: Topic authorization failed")] == report.failures
    assert report.replayed == 5


def test_a_record_that_cannot_be_queued_holds_back_the_rest_of_its_partition() -> None:
    """A produce refused at once at 1:0: nothing of partition 1 is sent or committed; the
    other partition is replayed and committed to its end."""
    reader = FakeDeadLetters({0: 2, 1: 3})
    producer = FakeProducer(refuse=[(1, 0)])

    report = run_replay(reader, producer)

    assert producer.sent == [(0, 0), (0, 1)]
    assert reader.commits == [{0: 2}]
    assert [(f.partition, f.offset) for f in report.failures] == [(1, 0)]
    assert "Unknown partition" in report.failures[0].error


def test_the_first_failure_of_a_partition_bounds_its_commit() -> None:
    """Two failed deliveries in one partition (2:3 and 2:1): committed up to the first, 1;
    both are reported, in offset order."""
    reader = FakeDeadLetters({2: 5})

    report = run_replay(reader, FakeProducer(fail=[(2, 3), (2, 1)]))

    assert reader.commits == [{2: 1}]
    assert [(f.partition, f.offset) for f in report.failures] == [(2, 1), (2, 3)]


def test_a_rerun_starts_at_the_failed_record_and_completes() -> None:
    """The next run reads from the failed record on, delivers it and commits to the end."""
    reader = FakeDeadLetters({0: 4})
    run_replay(reader, FakeProducer(fail=[(0, 2)]))
    producer = FakeProducer()

    report = run_replay(reader, producer)

    assert producer.sent == [(0, 2), (0, 3)]
    assert reader.commits == [{0: 2}, {0: 4}]
    assert report.failures == []


def test_a_failure_in_the_first_record_of_a_partition_commits_nothing_for_it() -> None:
    """Where the group already stands on the failed record, its partition is not committed."""
    reader = FakeDeadLetters({0: 2, 1: 1}, committed={0: 1})

    report = run_replay(reader, FakeProducer(fail=[(0, 1)]))

    assert reader.commits == [{1: 1}]
    assert report.committed == {1: 1}


def test_a_filtered_replay_commits_nothing_even_without_failures() -> None:
    """remember=False (a filtered replay): the group is never committed."""
    reader = FakeDeadLetters({0: 2})

    report = replay_from(
        reader,
        FakeProducer(),
        ReplayFilter(reasons=frozenset({"http_400"})),
        default_topic="events",
        pacing=_Rate(0.0),
        out=io.StringIO(),
        remember=False,
    )

    assert (reader.commits, report.committed, report.replayed) == ([], {}, 2)


def test_a_reason_no_dead_letter_has_is_named_with_the_reasons_there_are() -> None:
    """``--reason unknown_schemas`` (a typo) matches nothing: the report counts every reason
    read, and names the requested one no dead letter has, with the reasons present."""
    reader = FakeDeadLetters({0: 3})
    selection = ReplayFilter(reasons=frozenset({"http_400", "unknown_schemas"}))

    report = replay_from(
        reader,
        FakeProducer(),
        selection,
        default_topic="events",
        pacing=_Rate(0.0),
        out=io.StringIO(),
    )

    assert (report.replayed, report.reasons) == (3, {"http_400": 3})
    assert report.unmatched(selection) == [
        "--reason unknown_schemas: no dead letter has it; the reasons read: http_400 (3)"
    ]


def test_a_dead_letter_topic_that_does_not_exist_is_named_by_its_setting() -> None:
    """``KAFKA_DLQ_TOPIC`` misspelt (or no DLQ yet): a configuration error naming it, not a
    broker error with a traceback."""

    class NoTopic(FakeDeadLetters):
        def partitions(self, timeout: float = 30.0) -> list[int]:
            raise BrokerError("topic events.dlq not found")

    with pytest.raises(TopicError, match=r"KAFKA_DLQ_TOPIC: dead-letter topic 'events\.dlq'"):
        run_replay(NoTopic({}), FakeProducer())


def test_replay_headers_carry_the_stage_the_dead_letter_failed_at() -> None:
    """The service releases a parked key only for the replay of a record that failed to
    decode (the one that parked it): the stage travels with the replay."""
    headers = [("__connect.errors.stage", b"TRANSFORMATION"), ("button.parked", b"false")]

    assert header_map(replay_headers(headers, "0:3"))["button.replayed.stage"] == "TRANSFORMATION"
    assert "button.replayed.stage" not in header_map(replay_headers([], "0:4"))


def test_a_record_whose_key_was_released_is_replayed_asking_to_release_it_again() -> None:
    """A dead letter written when ``--release-keys`` gave its record up carries
    ``button.key.released``: any later replay of it asks the same (it must not park the
    user's key again because a later, plain replay happened to include it)."""
    released = [("button.parked", b"false"), ("button.key.released", b"true")]

    assert header_map(replay_headers(released, "0:5"))["button.replayed.release"] == "true"


def test_replay_headers_carry_whether_a_parked_dead_letter_parked_its_order() -> None:
    """Of an order parked behind its key, only the record that parked it releases it: the
    dead letter's ``button.parks.order`` travels with the replay, and a dead letter without
    it (an older version's) adds nothing."""
    parker = [("button.parked", b"true"), ("button.parks.order", b"true")]
    follower = [("button.parked", b"true"), ("button.parks.order", b"false")]

    assert header_map(replay_headers(parker, "0:1"))["button.replayed.parks.order"] == "true"
    assert header_map(replay_headers(follower, "0:2"))["button.replayed.parks.order"] == "false"
    older = header_map(replay_headers([("button.parked", b"true")], "0:3"))
    assert "button.replayed.parks.order" not in older


# --- replay_from: a filtered replay takes the records parked behind what it releases -----------


class ListedDeadLetters(FakeDeadLetters):
    """A DLQ of the given records: ``(partition, key, headers)`` each, in DLQ order."""

    def __init__(
        self,
        letters: Iterable[tuple[int, bytes | None, Mapping[str, str]]],
        committed: Mapping[int, int] | None = None,
    ) -> None:
        self._letters: dict[int, list[tuple[bytes | None, dict[str, str]]]] = {}
        for partition, key, headers in letters:
            self._letters.setdefault(partition, []).append((key, dict(headers)))
        super().__init__({p: len(rs) for p, rs in self._letters.items()}, committed)

    def read(
        self, ranges: Mapping[int, tuple[int, int]], deadline: float | None = None
    ) -> Iterator[Record]:
        # Partitions interleave, as PartitionReader's do: one record of each in turn.
        cursors = {p: start for p, (start, _) in ranges.items()}
        while cursors:
            for p in sorted(cursors):
                offset = cursors[p]
                if offset >= ranges[p][1]:
                    del cursors[p]
                    continue
                key, text = self._letters[p][offset]
                headers = [
                    ("__connect.errors.topic", b"events"),
                    ("__connect.errors.partition", str(p).encode()),
                    *((k, v.encode()) for k, v in text.items()),
                ]
                yield Record("events.dlq", p, offset, key, b"v", None, headers)
                cursors[p] = offset + 1


def first(order: str, reason: str = "http_400", stage: str = "TASK_PUT") -> dict[str, str]:
    """The first dead letter of ``order`` (not parked): it parks the order."""
    return dead_letter(
        **{
            "button.reason": reason,
            "button.order.id": order,
            "button.parked": "false",
            "__connect.errors.stage": stage,
        }
    )


def undecodable(reason: str = "bad_magic_byte") -> dict[str, str]:
    """The dead letter of a record that could not be decoded: it parks its whole key."""
    return {
        "button.reason": reason,
        "button.parked": "false",
        "__connect.errors.stage": "VALUE_CONVERTER",
        "button.dead.lettered.ms": str(AT),
    }


def parked(order: str, *, parks_order: bool = False) -> dict[str, str]:
    """A record of ``order`` parked behind an earlier dead letter (its order's or its key's)."""
    return dead_letter(
        **{
            "button.reason": "parked",
            "button.order.id": order,
            "button.parked": "true",
            "button.parks.order": "true" if parks_order else "false",
            "__connect.errors.stage": "TASK_PUT",
        }
    )


def filtered(
    reader: FakeDeadLetters, selection: ReplayFilter, *, dry_run: bool = False
) -> tuple[ReplayReport, list[tuple[int, int]], str]:
    """A filtered replay (nothing remembered): the report, what was sent, the dry run's lines."""
    producer = FakeProducer()
    out = io.StringIO()
    report = replay_from(
        reader,
        None if dry_run else producer,
        selection,
        default_topic="events",
        pacing=_Rate(0.0),
        out=out,
        remember=False,
    )
    return report, producer.sent, out.getvalue()


HTTP_400 = ReplayFilter(reasons=frozenset({"http_400"}))


def test_a_reason_filter_replays_the_records_parked_behind_each_order_it_releases() -> None:
    """``--reason http_400`` (the troubleshooting table's command): the refused creates of X
    and Y release their orders, so their refunds, parked behind them (reason ``parked``,
    filtered out by the reason), are replayed after them, in DLQ order; the report counts
    them. A parked record of another order, and a dead letter of another reason, stay."""
    reader = ListedDeadLetters(
        [
            (0, b"u1", first("X")),
            (0, b"u2", first("Y")),
            (0, b"u3", first("Z", reason="unknown_currency", stage="TRANSFORMATION")),
            (0, b"u1", parked("X")),
            (0, b"u3", parked("Z")),
            (0, b"u2", parked("Y")),
            (0, b"u1", parked("X")),
        ]
    )

    report, sent, _ = filtered(reader, HTTP_400)

    assert sent == [(0, 0), (0, 1), (0, 3), (0, 5), (0, 6)]
    assert (report.replayed, report.followers, report.skipped, report.held) == (5, 3, 2, 0)


def test_followers_are_the_same_key_and_order_in_the_same_dlq_partition() -> None:
    """A parked record follows the first dead letter of its own order under its own key
    (the service parks per user): the same order id under another key, or in another DLQ
    partition, does not follow it."""
    reader = ListedDeadLetters(
        [
            (0, b"u1", first("X")),
            (0, b"u9", parked("X")),
            (1, b"u1", parked("X")),
            (0, b"u1", parked("X")),
        ]
    )

    report, sent, _ = filtered(reader, HTTP_400)

    assert sent == [(0, 0), (0, 2)]
    assert (report.followers, report.skipped) == (1, 2)


def test_a_key_parked_behind_an_undecodable_record_brings_every_later_parked_record_of_it() -> None:
    """``--reason bad_magic_byte`` replays the record that parked its user's key: every later
    parked record of that key (whatever the order) follows it; another key's do not."""
    reader = ListedDeadLetters(
        [
            (0, b"u1", parked("W")),
            (0, b"u1", undecodable()),
            (0, b"u1", parked("A", parks_order=True)),
            (0, b"u2", parked("B", parks_order=True)),
            (0, b"u1", parked("A")),
            (0, b"u1", parked("C", parks_order=True)),
        ]
    )

    report, sent, _ = filtered(reader, ReplayFilter(reasons=frozenset({"bad_magic_byte"})))

    assert sent == [(0, 1), (0, 2), (0, 4), (0, 5)]
    assert report.followers == 3


def test_an_undecodable_record_without_a_key_parks_no_key_and_brings_nothing_along() -> None:
    """Without a key there is no key to park (the service parks keyless records by order id
    only): a keyless undecodable dead letter is followed by no parked record, and holds none
    back."""
    reader = ListedDeadLetters(
        [(0, None, undecodable()), (0, None, parked("K")), (0, b"u1", undecodable())]
    )

    report, sent, _ = filtered(reader, ReplayFilter(reasons=frozenset({"bad_magic_byte"})))
    assert (sent, report.followers) == ([(0, 0), (0, 2)], 0)
    report, sent, _ = filtered(reader, ReplayFilter(reasons=frozenset({"parked"})))
    assert (sent, report.held) == ([(0, 1)], 0)


def rejected(order: str, reason: str = "refund_exceeds_quantity") -> dict[str, str]:
    """The dead letter of a record of ``order`` the mapping rejected: it parked nothing."""
    return first(order, reason=reason, stage="TRANSFORMATION") | {"button.parks.order": "false"}


def test_a_dead_letter_that_parked_nothing_is_no_first_dead_letter_to_follow() -> None:
    """A rejection between an order's refused create and the records parked behind that
    create parked nothing: ``--reason http_400`` still brings those records along (they follow
    the create), and ``--reason parked`` does not hold them back behind the rejection."""
    reader = ListedDeadLetters(
        [(0, b"u1", first("X")), (0, b"u1", rejected("X")), (0, b"u1", parked("X"))]
    )

    report, sent, _ = filtered(reader, HTTP_400)
    assert (sent, report.followers, report.held) == ([(0, 0), (0, 2)], 1, 0)

    alone = ListedDeadLetters([(0, b"u1", rejected("X")), (0, b"u1", parked("X"))])
    report, sent, _ = filtered(alone, ReplayFilter(reasons=frozenset({"parked"})))
    assert (sent, report.held) == ([(0, 1)], 0)


def test_a_selected_parked_record_behind_an_unselected_first_dead_letter_is_held_back() -> None:
    """``--reason parked`` alone: each parked record's order is parked behind a first dead
    letter the filter does not select, so replaying it alone would only park it again (and
    it would then sit in the DLQ after its first dead letter, twice): it is left, and
    counted apart from what was filtered out, with the reasons of those first dead letters."""
    reader = ListedDeadLetters(
        [
            (0, b"u1", first("X")),
            (0, b"u2", undecodable()),
            (0, b"u1", parked("X")),
            (0, b"u2", parked("B", parks_order=True)),
        ]
    )

    report, sent, _ = filtered(reader, ReplayFilter(reasons=frozenset({"parked"})))

    assert sent == []
    assert (report.replayed, report.held, report.skipped) == (0, 2, 2)
    assert report.held_behind == {"http_400": 1, "bad_magic_byte": 1}


def test_the_latest_first_dead_letter_of_an_order_is_the_one_its_parked_records_follow() -> None:
    """X released by an earlier replay and refused again later: the records parked after the
    later first dead letter follow that one, not the earlier one the filter selects."""
    later = first("X") | {"button.dead.lettered.ms": str(AT + 60_000)}
    reader = ListedDeadLetters(
        [
            (0, b"u1", first("X")),
            (0, b"u1", parked("X")),
            (0, b"u1", later),
            (0, b"u1", parked("X")),
        ]
    )

    report, sent, _ = filtered(
        reader, ReplayFilter(reasons=frozenset({"http_400"}), until_ms=AT + 1)
    )

    assert sent == [(0, 0), (0, 1)]
    assert (report.followers, report.held, report.skipped) == (1, 0, 2)


def test_an_order_id_filter_replays_the_order_in_order_and_counts_its_follower() -> None:
    """``--order-id X`` selects X's first dead letter and its parked records itself: all are
    replayed, in DLQ order; the parked one is counted as parked behind X's first dead letter,
    as in any replay."""
    reader = ListedDeadLetters(
        [(0, b"u1", first("X")), (0, b"u2", first("Y")), (0, b"u1", parked("X"))]
    )

    report, sent, _ = filtered(reader, ReplayFilter(order_ids=frozenset({"X"})))

    assert sent == [(0, 0), (0, 2)]
    assert (report.replayed, report.followers, report.skipped) == (2, 1, 1)


def test_a_selected_parked_record_whose_first_dead_letter_is_not_read_is_replayed() -> None:
    """A filtered replay with ``--group-id`` starts where that group stands: a parked record
    whose first dead letter an earlier run replayed (no longer read) is replayed when
    selected, as a whole-DLQ replay would."""
    reader = ListedDeadLetters(
        [(0, b"u1", first("X")), (0, b"u1", parked("X")), (0, b"u2", parked("Y"))],
        committed={0: 1},
    )
    producer = FakeProducer()

    report = replay_from(
        reader,
        producer,
        ReplayFilter(order_ids=frozenset({"X"})),
        default_topic="events",
        pacing=_Rate(0.0),
        out=io.StringIO(),
    )

    assert producer.sent == [(0, 1)]
    assert (report.replayed, report.followers, report.held, report.skipped) == (1, 0, 0, 1)


def test_a_filtered_replay_under_a_group_commits_up_to_the_first_letter_it_did_not_replay() -> None:
    """``--reason http_400 --group-id G``: per DLQ partition, G is committed up to the first dead
    letter the run left (filtered out, or held back behind an unselected first dead letter),
    not past it, however much it replayed after it; a partition replayed whole to its end."""
    reader = ListedDeadLetters(
        [
            (0, b"u1", first("X")),
            (0, b"u2", first("Y", reason="retries_exhausted")),
            (0, b"u1", parked("X")),
            (1, b"u3", first("Z")),
            (1, b"u3", parked("Z")),
            (2, b"u4", first("V", reason="retries_exhausted")),
            (2, b"u4", parked("V")),
            (2, b"u5", first("U")),
        ]
    )
    producer = FakeProducer()

    report = replay_from(
        reader, producer, HTTP_400, default_topic="events", pacing=_Rate(0.0), out=io.StringIO()
    )

    assert producer.sent == [(0, 0), (1, 0), (1, 1), (0, 2), (2, 2)]
    assert report.committed == {0: 1, 1: 2}
    assert reader.commits == [{0: 1, 1: 2}]


def test_a_held_back_letter_is_not_committed_past() -> None:
    """``--reason parked --group-id G``: X's refund is held back behind X's unselected create,
    Y's (its first dead letter replayed by an earlier run of G) is replayed: G stays where it
    stood, on X's create, so a later run of G reads both of X's dead letters again."""
    reader = ListedDeadLetters(
        [
            (0, b"u2", first("Y")),
            (0, b"u1", first("X")),
            (0, b"u1", parked("X")),
            (0, b"u2", parked("Y")),
        ],
        committed={0: 1},
    )
    producer = FakeProducer()

    report = replay_from(
        reader,
        producer,
        ReplayFilter(reasons=frozenset({"parked"})),
        default_topic="events",
        pacing=_Rate(0.0),
        out=io.StringIO(),
    )

    assert (producer.sent, report.held) == ([(0, 3)], 1)
    assert (report.committed, reader.commits) == ({}, [{}])


def test_a_dry_run_lists_the_followers_with_the_dead_letter_they_follow() -> None:
    """``--dry-run --reason http_400``: each added parked record is listed after its order's
    first dead letter, naming it (``follows``)."""
    reader = ListedDeadLetters([(0, b"u1", first("X")), (0, b"u1", parked("X"))])

    report, _, out = filtered(reader, HTTP_400, dry_run=True)

    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["dlq"], line["reason"], line.get("follows")) for line in lines] == [
        ("0:0", "http_400", None),
        ("0:1", "parked", "0:0"),
    ]
    assert (report.replayed, report.followers) == (2, 1)


def test_a_whole_dlq_replay_counts_the_records_parked_behind_a_replayed_first_dead_letter() -> None:
    """No filter: every dead letter is replayed in DLQ order, none held or filtered out; X's
    parked record follows X's first dead letter and is counted so, as a filtered replay counts
    it (observed: 0). Y's, whose first dead letter this run does not read, follows none."""
    reader = ListedDeadLetters(
        [(0, b"u1", first("X")), (0, b"u2", parked("Y")), (0, b"u1", parked("X"))]
    )

    report, sent, _ = filtered(reader, ReplayFilter())

    assert sent == [(0, 0), (0, 1), (0, 2)]
    assert (report.replayed, report.followers, report.held, report.skipped) == (3, 1, 0, 0)


def test_the_summary_says_how_many_followers_were_added_and_what_was_held() -> None:
    """What ``replay-dlq`` prints: the followers in the replayed count, the held parked
    records apart from what was filtered out, with what to do about them."""
    report = ReplayReport(
        read=30,
        replayed=24,
        skipped=4,
        followers=12,
        held=2,
        held_behind={"http_404": 2},
        reasons={"http_400": 12, "parked": 14, "http_404": 4},
        selected_values={("reason", "http_400")},
    )

    assert summary_lines(report, HTTP_400, dry_run=False) == [
        "read 30 dead letters, replayed 24 (12 of them parked behind the first dead letter of "
        "their order or key, replayed after it), left 4 (filtered out)",
        "button-consumer: left 2 selected parked dead letters: the first dead letter of "
        "their order (or key) is in the DLQ and not selected (http_404 (2)), so they would be "
        "parked again; select it too (it brings them along) or replay the whole DLQ",
    ]
    nothing_left = ReplayReport(read=3, replayed=3, followers=1)
    assert summary_lines(nothing_left, ReplayFilter(since_ms=AT), dry_run=True) == [
        "read 3 dead letters, would replay 3 (1 of them parked behind the first dead letter of "
        "their order or key, replayed after it), left 0 (filtered out)"
    ]


def test_the_whole_dlq_summary_counts_the_parked_and_filters_nothing_out() -> None:
    """No filter: the same count of records parked behind their first dead letter as a
    filtered run's, from a real replay, and no `left 0 (filtered out)`: nothing was filtered
    (observed: `read 3 dead letters, replayed 3, left 0 (filtered out)`)."""
    reader = ListedDeadLetters(
        [(0, b"u1", first("X")), (0, b"u1", parked("X")), (0, b"u1", parked("X"))]
    )
    report, _, _ = filtered(reader, ReplayFilter())

    assert summary_lines(report, ReplayFilter(), dry_run=False) == [
        "read 3 dead letters, replayed 3 (2 of them parked behind the first dead letter of "
        "their order or key, replayed after it)"
    ]
    plain = ReplayReport(read=3, replayed=3)
    assert summary_lines(plain, ReplayFilter(), dry_run=True) == [
        "read 3 dead letters, would replay 3"
    ]


# --- the service's lag when the replay writes ---------------------------------------------------


class FakeInput(FakeDeadLetters):
    """The input topic as the service's group sees it: ``(low, high)`` and the committed offset
    (``None``: nothing committed) per partition."""

    topic = "events"

    def __init__(self, partitions: Mapping[int, tuple[int, int, int | None]]) -> None:
        super().__init__({p: high for p, (_, high, _) in partitions.items()})
        self._input = dict(partitions)

    def watermarks(self, partitions: Iterable[int], deadline: float) -> dict[int, tuple[int, int]]:
        return {p: self._input[p][:2] for p in partitions}

    def committed(self, partitions: Iterable[int], timeout: float = 30.0) -> dict[int, int | None]:
        return {p: self._input[p][2] for p in partitions}


def test_the_input_lag_is_what_the_group_has_not_consumed_per_partition() -> None:
    """Per partition of the input topic, the records after the group's committed offset (all
    of them from the first when it committed nothing); partitions without lag are left out."""
    reader = FakeInput({0: (0, 7, 5), 1: (2, 4, None), 2: (0, 7, 7), 3: (0, 0, None)})

    assert input_lag(reader) == {0: 2, 1: 2}


def test_the_report_names_the_input_partitions_the_replay_wrote_to() -> None:
    """Where the replayed records went (topic and partition, from their headers), so the lag
    of the partitions written to, and no other, can be told."""
    reader = ListedDeadLetters([(0, b"u1", first("X")), (1, b"u2", first("Y"))])

    report, _, _ = filtered(reader, ReplayFilter())

    assert report.targets == {("events", 0), ("events", 1)}


def test_only_the_lag_of_the_partitions_written_to_matters() -> None:
    """A lagging partition the replay did not write to cannot run a replayed record's order
    out of order: left out. A record written without a partition (the producer chose) may be
    behind any of them."""
    lag = {0: 3, 2: 1}

    assert lagging(lag, {("events", 0), ("events", 1), ("other", 2)}, "events") == {0: 3}
    assert lagging(lag, {("events", None)}, "events") == {0: 3, 2: 1}
    assert lagging({}, {("events", 0)}, "events") == {}


def test_the_summary_warns_when_the_service_had_not_consumed_what_is_ahead_of_the_replay() -> None:
    """The group lagged on a partition written to: a later record of a replayed order among
    the records it had not consumed is read first and parked again; the operator is told to
    replay the whole DLQ again once the lag is 0."""
    report = ReplayReport(
        read=1, replayed=1, reasons={"http_400": 1}, lagging={0: 3, 4: 1}, lag_group="svc"
    )

    assert summary_lines(report, ReplayFilter(), dry_run=False)[1:] == [
        "button-consumer: warning: group svc had not consumed 4 records of the partitions "
        "written to (0: 3, 4: 1); it reads them before the replayed ones, so a later record of "
        "a replayed order among them is dead-lettered again, parked; once the group's lag is "
        "0, run replay-dlq without filters again (it replays only what was dead-lettered since "
        "its last run)"
    ]
    unknown = ReplayReport(read=1, replayed=1, reasons={"http_400": 1}, lag_error="denied")
    assert summary_lines(unknown, ReplayFilter(), dry_run=False)[1:] == [
        "button-consumer: could not read the service group's lag (denied): replay when it is "
        "0, and run replay-dlq without filters again afterwards"
    ]


# --- replay-dlq's exit status: the selection replayed whole, or not ----------------------------


@pytest.fixture
def dlq_of(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``dlq_of(reader, producer=None)``: ``replay-dlq`` replays from ``reader`` with
    ``producer`` (default: one that acknowledges all; ``--dry-run``: none), as ``replay``
    would from the DLQ."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")

    def use(reader: FakeDeadLetters, producer: FakeProducer | None = None) -> None:
        def fake_replay(_settings: object, selection: ReplayFilter, **kwargs: Any) -> ReplayReport:
            return replay_from(
                reader,
                None if kwargs["dry_run"] else producer or FakeProducer(),
                selection,
                default_topic="events",
                pacing=_Rate(0.0),
                out=kwargs["out"],
                remember=kwargs["remember"],
            )

        monkeypatch.setattr("consumer.replay.replay", fake_replay)

    return use


def _held_dlq() -> ListedDeadLetters:
    """X's refused create, then its refund parked behind it."""
    return ListedDeadLetters([(0, b"u1", first("X")), (0, b"u1", parked("X"))])


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
@pytest.mark.parametrize(
    ("selection", "status", "says"),
    [
        ([], 0, ""),
        (["--order-id", "X"], 0, ""),
        (["--reason", "http_400"], 0, ""),
        (["--reason", "nosuch"], 1, "--reason nosuch: no dead letter has it"),
        (["--order-id", "NOPE"], 1, "--order-id NOPE: no dead letter has it"),
        (["--order-id", "X", "--order-id", "NOPE"], 1, "--order-id NOPE: no dead letter has it"),
        (["--reason", "parked"], 1, "left 1 selected parked dead letter:"),
        (
            ["--reason", "http_400", "--order-id", "Y"],
            1,
            "--order-id Y: no dead letter has it",
        ),
    ],
)
def test_replay_dlq_exits_1_when_the_selection_was_not_replayed_whole(
    dlq_of: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
    dry_run: list[str],
    selection: list[str],
    status: int,
    says: str,
) -> None:
    """``replay-dlq --order-id X && echo replayed`` is not misled: a ``--reason`` or
    ``--order-id`` value that selects no dead letter, or a selected dead letter held back
    behind an unselected first one, exits 1 (the lines saying why already printed); a
    selection replayed whole exits 0. ``--dry-run`` exits as the replay would."""
    dlq_of(_held_dlq())

    assert cli.main(["replay-dlq", "--no-progress", *selection, *dry_run]) == status

    err = capsys.readouterr().err
    assert says in err


def test_a_value_the_other_filters_exclude_exits_1_naming_it(
    dlq_of: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--reason http_400 --order-id X`` where X's only dead letter is parked: each value is
    in the DLQ, but together they select nothing of X: exit 1, naming the value left out."""
    dlq_of(
        ListedDeadLetters(
            [(0, b"u1", first("Y")), (0, b"u2", first("Z", reason="retries_exhausted"))]
        )
    )

    status = cli.main(["replay-dlq", "--no-progress", "--reason", "http_400", "--order-id", "Z"])

    err = capsys.readouterr().err
    assert status == 1
    assert "--reason http_400: the other filters select none of its 1 dead letter" in err
    assert "--order-id Z: the other filters select none of its 1 dead letter" in err


def test_a_failed_delivery_still_exits_1(dlq_of: Callable[..., None]) -> None:
    """Unchanged: a dead letter not acknowledged exits 1."""
    dlq_of(FakeDeadLetters({0: 2}), FakeProducer(fail=[(0, 1)]))

    assert cli.main(["replay-dlq", "--no-progress"]) == 1


def test_a_missing_dead_letter_topic_exits_1_as_a_topic_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DLQ that does not exist is a topic error (exit 1, README "Commands"), not a
    configuration error (2): the settings are valid, the cluster lacks the topic."""

    def no_dlq(*_args: object, **_kwargs: object) -> ReplayReport:
        raise TopicError("KAFKA_DLQ_TOPIC: dead-letter topic 'events.dlq' does not exist")

    monkeypatch.setattr("consumer.replay.replay", no_dlq)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")

    assert cli.main(["replay-dlq", "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        "button-consumer: KAFKA_DLQ_TOPIC: dead-letter topic 'events.dlq' does not exist\n"
    )


def test_the_summary_counts_one_of_a_kind_in_the_singular() -> None:
    """One dead letter read, replayed, held, lagging or selecting nothing: each line says
    "1 dead letter" or "1 record", never "1 dead letters" nor "dead letter(s)"."""
    report = ReplayReport(read=1, replayed=1, followers=1, held=1, held_behind={"http_400": 1})
    report.reasons = {"http_400": 1}
    report.lagging, report.lag_group = {0: 1}, "svc"
    selection = ReplayFilter(reasons=frozenset({"http_400"}))

    text = "\n".join(summary_lines(report, selection, dry_run=False))

    assert text.startswith("read 1 dead letter, replayed 1 (1 of them parked"), text
    assert "left 1 selected parked dead letter: " in text, text
    assert "had not consumed 1 record of the partitions" in text, text
    assert "the other filters select none of its 1 dead letter\n" in text + "\n", text
    assert "(s)" not in text, text
