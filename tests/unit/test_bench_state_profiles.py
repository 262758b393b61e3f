"""The state test's kinds of profile (``bench.workload.state_profile``): what each holds.

The ``attributed`` kind is what an attributed app purchase leaves (a ``btn_ref``, an IDFA, an
email's hash, a customer id, under a UUID user key); the memory figures of the README are
measured with both kinds, so each must hold what its name says, and each user's identifiers
must be their own (profiles held compressed with a dictionary would make identical values
nearly free).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from bench.workload import STATE_PROFILES, state_key, state_profile
from consumer.domain.profile_codec import decode_profile

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_minimal_profile_holds_one_order_and_a_customer_id_only() -> None:
    profile = decode_profile(state_profile("minimal", NOW))

    assert (len(profile.orders), profile.tokens, profile.idfas) == (1, (), ())
    customer = profile.orders[0].customer
    assert customer is not None
    assert (customer.email_sha256, customer.device_kind) == (None, None)
    assert state_key("minimal", 7) == b"u-state-7"


def test_attributed_profile_holds_a_token_an_idfa_and_an_email_hash() -> None:
    value = state_profile("attributed", NOW)
    profile = decode_profile(value)

    assert len(profile.tokens) == 1
    assert re.fullmatch(r"srctok-[0-9a-f]{16}", profile.tokens[0].value)
    assert len(profile.idfas) == 1
    customer = profile.orders[0].customer
    assert customer is not None
    assert customer.email_sha256 is not None
    assert customer.device_kind == "idfa"
    assert len(value) > len(state_profile("minimal", NOW)) + 100
    assert len(state_key("attributed", 7)) == 36


@pytest.mark.parametrize("kind", STATE_PROFILES)
def test_each_user_has_identifiers_of_their_own(kind: str) -> None:
    first, second = (
        decode_profile(state_profile(kind, NOW, 1)),
        decode_profile(state_profile(kind, NOW, 2)),
    )

    assert state_profile(kind, NOW, 1) == state_profile(kind, NOW, 1)
    assert first.orders[0].order_id != second.orders[0].order_id
    assert first.orders[0].customer != second.orders[0].customer
    if kind == "attributed":
        assert first.tokens[0].value != second.tokens[0].value
        assert first.idfas[0].value != second.idfas[0].value


def test_unknown_kind_is_refused_by_name() -> None:
    assert STATE_PROFILES == ("minimal", "attributed")
    with pytest.raises(ValueError, match="'rich'"):
        state_profile("rich", NOW)
