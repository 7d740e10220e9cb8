"""What analytics keeps of a shopper (services.analytics.privacy) and how a search id is
checked (services.analytics.ids): no database needed."""

from __future__ import annotations

import stat
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from services.analytics import ids, privacy


def test_a_session_is_stored_only_as_a_salted_hash_that_changes_daily(tmp_path):
    folder = tmp_path / "salts"
    day1 = datetime(2026, 12, 7, 10, tzinfo=UTC)
    a = privacy.session_hash(folder, "shopper-session-0001", day1)
    assert a == privacy.session_hash(folder, "shopper-session-0001", day1 + timedelta(hours=5))
    assert a != privacy.session_hash(folder, "shopper-session-0002", day1)
    b = privacy.session_hash(folder, "shopper-session-0001", day1 + timedelta(days=1))
    assert a != b and len(a) == len(b) == 16
    assert "shopper" not in a and privacy.session_hash(folder, None, day1) is None
    salt = folder / "2026-12-07"
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_days_salt_is_deleted_two_days_later(tmp_path):
    folder = tmp_path / "salts"
    first = datetime(2026, 12, 1, tzinfo=UTC)
    for d in range(5):
        privacy.session_hash(folder, "shopper-session-0001", first + timedelta(days=d))
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == ["2026-12-03", "2026-12-04", "2026-12-05"]
    assert date.fromisoformat(kept[0]) == date(2026, 12, 5) - timedelta(days=privacy.KEEP_DAYS)


def test_session_buckets_are_sticky_and_spread():
    buckets = [privacy.bucket(f"session-{i:06d}", 7) for i in range(4000)]
    assert buckets[:50] == [privacy.bucket(f"session-{i:06d}", 7) for i in range(50)]
    share = sum(b < 0.25 for b in buckets) / len(buckets)
    assert 0.22 < share < 0.28  # a 25 % traffic share takes about a quarter of sessions
    other = [privacy.bucket(f"session-{i:06d}", 8) for i in range(4000)]
    both = sum(a < 0.25 and b < 0.25 for a, b in zip(buckets, other, strict=True)) / 4000
    assert 0.03 < both < 0.10  # independent between experiments (0.0625 expected)


@pytest.mark.parametrize(
    "value, ok",
    [
        ("abcdefgh", True),
        ("A" * 128, True),
        ("abc", False),
        ("A" * 129, False),
        ("has space1", False),
        ("new\nline12", False),
        ("ok_ok-ok_9", True),
    ],
)
def test_session_id_shape(value, ok):
    assert privacy.valid_session_id(value) is ok


def test_a_search_id_is_refused_when_altered_foreign_or_old():
    key = b"k" * 32
    sid, token = ids.new_search_id(key, offset=24, shown=24)
    back = ids.read_search_id(token, key)
    assert back == sid and list(back.positions()) == list(range(25, 49))
    for bad in (token[:-1], token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "x", "", "!!"):
        with pytest.raises(ids.UnknownSearchId):
            ids.read_search_id(bad, key)
    with pytest.raises(ids.UnknownSearchId):
        ids.read_search_id(token, b"z" * 32)
    with pytest.raises(ids.UnknownSearchId, match="expired"):
        ids.read_search_id(token, key, now=time.time() + ids.MAX_AGE_S + 5)
    _, empty = ids.new_search_id(key, offset=0, shown=0)
    assert list(ids.read_search_id(empty, key).positions()) == []
