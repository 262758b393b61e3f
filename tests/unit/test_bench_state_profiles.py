"""The state test's kinds of profile (``bench.workload.state_profile``): what each holds.

The ``attributed`` kind is what an attributed app purchase leaves (a ``btn_ref``, an IDFA, an
email's hash, a customer id, under a UUID user key); the memory figures of the README are
measured with both kinds, so each must hold what its name says.
"""

from __future__ import annotations

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

    assert [t.value for t in profile.tokens] == ["srctok-0123456789abcdef"]
    assert len(profile.idfas) == 1
    customer = profile.orders[0].customer
    assert customer is not None
    assert customer.email_sha256 is not None
    assert customer.device_kind == "idfa"
    assert len(value) > len(state_profile("minimal", NOW)) + 100
    assert len(state_key("attributed", 7)) == 36


def test_unknown_kind_is_refused_by_name() -> None:
    assert STATE_PROFILES == ("minimal", "attributed")
    with pytest.raises(ValueError, match="'rich'"):
        state_profile("rich", NOW)
