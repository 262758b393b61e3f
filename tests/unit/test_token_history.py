"""The profile's token history: the token in force at any event time, whatever order the
sightings arrive in (``profile.with_stamped``, ``Profile.token_at``, expiry and pruning)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.profile import (
    MAX_TOKENS,
    Profile,
    Retention,
    expires_at_ms,
    prune,
    with_stamped,
)
from consumer.domain.profile_codec import decode_profile

DAY_MS = 86_400_000
NOW = 1_767_000_000_000
WINDOW = 30 * DAY_MS
FOREVER = 2**62
RETENTION = Retention(btn_ref_ms=32 * DAY_MS, device_id_ms=90 * DAY_MS, order_ms=90 * DAY_MS)


def seen(value: str, at_ms: int, source: TokenSource = TokenSource.URL) -> ResolvedToken:
    return ResolvedToken(value, source, at_ms)


def history_of(sightings: Sequence[ResolvedToken], limit: int = MAX_TOKENS) -> Profile:
    """The profile after ``sightings`` arrived in this order."""
    tokens: tuple[ResolvedToken, ...] = ()
    for sighting in sightings:
        tokens = with_stamped(tokens, sighting, limit)
    return Profile(tokens=tokens)


def in_force(profile: Profile, at_ms: int, window_ms: int = WINDOW) -> str | None:
    token = profile.token_at(at_ms, window_ms)
    return None if token is None else token.value


def reference(sightings: Sequence[ResolvedToken], at_ms: int, window_ms: int) -> str | None:
    """The meaning: the latest sighting at or before ``at_ms`` (ties: the greater value), if it
    is at most ``window_ms`` old."""
    before = [s for s in sightings if s.seen_at_ms <= at_ms]
    if not before:
        return None
    latest = max(before, key=lambda s: (s.seen_at_ms, s.value))
    return latest.value if at_ms - latest.seen_at_ms <= window_ms else None


def test_a_late_order_keeps_the_token_seen_before_it_when_the_same_token_was_seen_after() -> None:
    """Install with srctok-B 5 days ago, app open with srctok-B 1 day ago, then a purchase dated
    3 days ago: the purchase's time is in srctok-B's reign, counted from the install."""
    install, reopen = seen("srctok-B", NOW - 5 * DAY_MS), seen("srctok-B", NOW - 1 * DAY_MS)
    profile = history_of([install, reopen])
    token = profile.token_at(NOW - 3 * DAY_MS, WINDOW)
    assert token == install


@pytest.mark.parametrize("arrival", list(permutations([("A", 1), ("B", 2), ("A", 5)])), ids=str)
def test_a_token_seen_again_after_another_is_in_force_again_only_from_then(
    arrival: tuple[tuple[str, int], ...],
) -> None:
    """A at t1, B at t2, A again at t5, in any arrival order: at t3 it is B, at t6 A, at t0
    none, at t1 A."""
    profile = history_of([seen(v, t * DAY_MS) for v, t in arrival])
    expected = {0: None, 1: "A", 3: "B", 6: "A"}
    actual = {t: in_force(profile, t * DAY_MS) for t in expected}
    assert expected == actual


def test_the_window_counts_from_the_latest_sighting_before_the_order() -> None:
    """A token seen again stays fresh: seen on day 0 and day 25 (window 30 days), an order on
    day 40 takes it; an order on day 20 takes it (day 0 is 20 days old); one on day 56 does not."""
    profile = history_of([seen("A", 25 * DAY_MS), seen("A", 0)])
    assert (in_force(profile, 40 * DAY_MS), in_force(profile, 20 * DAY_MS)) == ("A", "A")
    assert in_force(profile, 56 * DAY_MS) is None


def test_a_long_gap_inside_one_tokens_sightings_is_outside_the_window() -> None:
    """Seen on day 0 and day 40 only (window 30 days): on day 35 the latest sighting is 35 days
    old, so none is in force; on day 41 it is the day-40 one."""
    profile = history_of([seen("A", 40 * DAY_MS), seen("A", 0)])
    assert (in_force(profile, 35 * DAY_MS), in_force(profile, 41 * DAY_MS)) == (None, "A")


def test_expiry_counts_from_the_newest_sighting() -> None:
    """A profile whose token was seen again lives until the newest sighting expires, and
    pruning forgets only the sightings older than the retention."""
    old, new = seen("A", NOW - 40 * DAY_MS), seen("A", NOW - 1 * DAY_MS)
    profile = history_of([new, old])
    assert new.seen_at_ms + RETENTION.btn_ref_ms == expires_at_ms(profile, RETENTION)
    assert (new,) == prune(profile, NOW, RETENTION).tokens


def test_repeated_sightings_never_push_the_first_sighting_of_a_token_out() -> None:
    """An install with srctok-B, then twenty daily opens with it: the history stays within its
    bound and still knows srctok-B from the install on, so a late purchase dated the day after
    the install takes it."""
    install = seen("srctok-B", 0)
    opens = [seen("srctok-B", d * DAY_MS, TokenSource.EXPLICIT) for d in range(2, 22)]
    profile = history_of([*opens, install])
    assert len(profile.tokens) <= MAX_TOKENS
    assert profile.tokens[0] == install
    assert profile.tokens[-1] == opens[-1]
    assert in_force(profile, DAY_MS) == "srctok-B"


def test_a_sighting_arriving_twice_changes_nothing() -> None:
    """A replayed event adds no entry (the history is returned as is)."""
    profile = history_of([seen("A", 1), seen("B", 2)])
    assert with_stamped(profile.tokens, seen("A", 1), MAX_TOKENS) is profile.tokens
    again = with_stamped(profile.tokens, seen("A", 1, TokenSource.EXPLICIT), MAX_TOKENS)
    assert again is profile.tokens


def test_a_placeholder_left_in_a_history_by_an_older_release_is_never_in_force() -> None:
    """``undefined`` remembered by the previous release (it took it for a token) is skipped:
    the real token before it is in force; and it is dropped at the next sighting."""
    profile = Profile(tokens=(seen("srctok-real", 1 * DAY_MS), seen("undefined", 2 * DAY_MS)))
    assert in_force(profile, 3 * DAY_MS) == "srctok-real"
    later = with_stamped(profile.tokens, seen("srctok-real", 4 * DAY_MS), MAX_TOKENS)
    assert [t.value for t in later] == ["srctok-real", "srctok-real"]


PREVIOUS_RELEASE_VALUE = bytes.fromhex(
    "040000019c090d6a00a5a2a388737263746f6b2d4102c380a8f8b0e766a388737263746f6b2d4200c380a88fc4"
    "ec66a0a0a0a0"
)
"""A version-4 profile as the previous release wrote it: srctok-A (URL) seen 9 days before
``NOW``, srctok-B (explicit) 1 day before (each entry the latest sighting of its run)."""


def test_a_history_written_by_the_previous_release_reads_as_sightings() -> None:
    """The format is unchanged: the previous release's entries are sightings (the latest of
    each run it merged), so its profiles read as they are and take new sightings."""
    profile = decode_profile(PREVIOUS_RELEASE_VALUE)
    assert profile.tokens == (
        seen("srctok-A", NOW - 9 * DAY_MS),
        seen("srctok-B", NOW - 1 * DAY_MS, TokenSource.EXPLICIT),
    )
    assert in_force(profile, NOW - 5 * DAY_MS) == "srctok-A"
    reopened = with_stamped(profile.tokens, seen("srctok-A", NOW), MAX_TOKENS)
    assert [in_force(Profile(tokens=reopened), NOW - d * DAY_MS) for d in (5, 1, 0)] == [
        "srctok-A",
        "srctok-B",
        "srctok-A",
    ]


# --- properties over sighting orders --------------------------------------------------------


@st.composite
def sightings(draw: st.DrawFn, max_size: int) -> list[ResolvedToken]:
    """Distinct (time, value) sightings of a few tokens, in a drawn arrival order."""
    pairs = draw(
        st.lists(
            st.tuples(st.integers(0, 60), st.sampled_from("ABC")),
            min_size=1,
            max_size=max_size,
            unique=True,
        )
    )
    return [seen(f"srctok-{v}", t * DAY_MS, draw(st.sampled_from(TokenSource))) for t, v in pairs]


PROBES = [t * DAY_MS + d for t in range(-1, 95) for d in (-1, 0, 1)]


@given(sightings(MAX_TOKENS), st.sampled_from([DAY_MS, 7 * DAY_MS, WINDOW]))
def test_within_the_bound_the_token_in_force_is_exact_in_any_arrival_order(
    arrived: list[ResolvedToken], window_ms: int
) -> None:
    """Up to ``MAX_TOKENS`` sightings, in whatever order they arrive: at every moment the token
    in force is the latest sighting at or before it, if within the window; and the history is
    the same whatever the arrival order."""
    profile = history_of(arrived)
    expected = [reference(arrived, at, window_ms) for at in PROBES]
    actual = [in_force(profile, at, window_ms) for at in PROBES]
    assert expected == actual
    in_time_order = history_of(sorted(arrived, key=lambda s: (s.seen_at_ms, s.value)))
    assert [(t.value, t.seen_at_ms) for t in in_time_order.tokens] == [
        (t.value, t.seen_at_ms) for t in profile.tokens
    ]


@given(sightings(40))
def test_beyond_the_bound_the_history_stays_bounded_and_exact_from_the_newest_sighting(
    arrived: list[ResolvedToken],
) -> None:
    """However many sightings arrive, in any order, the history keeps at most ``MAX_TOKENS``
    entries, each a real sighting, and is exact at and after the newest sighting."""
    profile = history_of(arrived)
    assert len(profile.tokens) <= MAX_TOKENS
    assert set(profile.tokens) <= set(arrived)
    newest = max(s.seen_at_ms for s in arrived)
    probes = [at for at in PROBES if at >= newest]
    assert [reference(arrived, at, WINDOW) for at in probes] == [
        in_force(profile, at) for at in probes
    ]


@given(sightings(40))
def test_sightings_in_event_time_order_keep_the_value_in_force_exact_beyond_the_bound(
    arrived: list[ResolvedToken],
) -> None:
    """When sightings arrive in event-time order (the usual case), the value in force is exact
    at every moment from the oldest sighting kept on, however many arrived (only repeated
    sightings in the middle of a run of one token are given up to the bound)."""
    ordered = sorted(arrived, key=lambda s: (s.seen_at_ms, s.value))
    profile = history_of(ordered)
    oldest = profile.tokens[0].seen_at_ms
    probes = [at for at in PROBES if at >= oldest]
    assert [reference(ordered, at, FOREVER) for at in probes] == [
        in_force(profile, at, FOREVER) for at in probes
    ]
