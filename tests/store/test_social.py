"""The social side at the store level: photos, blocks, browsing, profile cards and
account reports (underage ones confirmed by an operator). Real SQLite files, a fake
clock, real JPEGs cleaned by store/photos.py."""

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from mediaserver.store import REPORT_REASONS, Invalid, NotFound, Store
from mediaserver.store.core import PHOTO_PATH
from mediaserver.store.photos import clean_photo
from tests.support.store import KEY, Clock, file_bytes, make


@pytest.fixture
def young_store(tmp_path, clock: Clock) -> Iterator[Store]:
    """A store that lets 13-year-olds in (--min-age 13): the age line matters."""
    s = Store(str(tmp_path / "young.db"), KEY, clock=clock, min_age=13)
    yield s
    s.close()


def photo(colour: str = "red") -> tuple[bytes, int, int]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "JPEG")
    return clean_photo(buf.getvalue(), "image/jpeg")


def handles(cards: list[dict]) -> list[str]:
    return [card["handle"] for card in cards]


# -- photos -----------------------------------------------------------------------------

def test_photo_is_sealed_and_its_public_id_changes_per_upload(store, path):
    p, _ = make(store, discoverable=True)
    jpeg, width, height = photo()
    first = store.set_photo(p.id, jpeg, width, height)
    assert store.get_photo(p.id) == jpeg == store.public_photo(first)
    assert store.get_profile(p.id).photo_id == first
    store.checkpoint()
    assert jpeg not in file_bytes(path)  # sealed with the data key at rest
    second = store.set_photo(p.id, *photo("blue"))
    assert second != first
    with pytest.raises(NotFound):
        store.public_photo(first)
    store.delete_photo(p.id)
    with pytest.raises(NotFound):
        store.get_photo(p.id)
    with pytest.raises(NotFound):
        store.delete_photo(p.id)


# -- blocks and browsing ----------------------------------------------------------------

def test_browse_lists_discoverable_profiles_by_shared_interests(store):
    me, _ = make(store, "viewer", interests=["chess", "jazz"])
    make(store, "both_match", interests=["jazz", "chess"], discoverable=True)
    make(store, "one_match", interests=["jazz"], discoverable=True, language="pt-BR")
    make(store, "no_match", interests=["golf"], discoverable=True)
    make(store, "hidden", interests=["chess", "jazz"])
    cards, cursor = store.browse(me.id)
    assert handles(cards) == ["both_match", "one_match", "no_match"] and cursor is None
    assert set(cards[0]) == {"handle", "photo_url", "bio", "interests", "age_band"}
    assert cards[0]["age_band"] == "35-44"
    assert handles(store.browse(me.id, interest="GOLF")[0]) == ["no_match"]
    assert handles(store.browse(me.id, language="pt-br")[0]) == ["one_match"]


def test_browse_pages_with_a_cursor(store):
    me, _ = make(store, "viewer")
    for i in range(5):
        make(store, f"listed_{i}", discoverable=True)
    page1, cursor = store.browse(me.id, limit=2)
    page2, cursor2 = store.browse(me.id, cursor=cursor, limit=2)
    page3, cursor3 = store.browse(me.id, cursor=cursor2, limit=2)
    assert len(page1) == len(page2) == 2 and len(page3) == 1 and cursor3 is None
    assert sorted(handles(page1 + page2 + page3)) == [f"listed_{i}" for i in range(5)]
    with pytest.raises(Invalid) as exc:
        store.browse(me.id, cursor="not a cursor")
    assert exc.value.field == "cursor"


def test_a_block_hides_both_ways_until_unblocked(store):
    me, _ = make(store, "viewer", discoverable=True)
    other, _ = make(store, "other_one", discoverable=True)
    store.block(me.id, "other_one")
    store.block(me.id, "other_one")  # again: a no-op
    assert store.blocked_handles(me.id) == ["other_one"]
    assert handles(store.browse(me.id)[0]) == []
    assert handles(store.browse(other.id)[0]) == []
    with pytest.raises(Invalid):
        store.block(me.id, "viewer")
    with pytest.raises(NotFound):
        store.block(me.id, "nobody_here")
    store.unblock(me.id, "other_one")
    assert handles(store.browse(other.id)[0]) == ["viewer"]
    with pytest.raises(NotFound):
        store.unblock(me.id, "other_one")


def test_adults_and_minors_never_see_each_other(young_store):
    adult, _ = make(young_store, "adult_one", discoverable=True)
    minor, _ = make(young_store, "minor_one", date_of_birth="2012-01-01", discoverable=True)
    make(young_store, "minor_two", date_of_birth="2011-05-05", discoverable=True)
    assert handles(young_store.browse(adult.id)[0]) == []
    assert handles(young_store.browse(minor.id)[0]) == ["minor_two"]
    # across the line a handle is answered like an unknown one
    with pytest.raises(NotFound):
        young_store.block(adult.id, "minor_one")
    with pytest.raises(NotFound):
        young_store.report_account(minor.id, "adult_one", "spam")


# -- cards and reports ------------------------------------------------------------------

def test_a_shared_card_carries_a_photo_url_of_its_own(store):
    p, _ = make(store, bio="hello", interests=["jazz"], discoverable=True)
    assert store.share_profile_card(p.id) == {
        "handle": "alice", "photo_url": None, "bio": "hello", "interests": ["jazz"]}
    listing_id = store.set_photo(p.id, *photo())
    card = store.share_profile_card(p.id)
    share_id = card["photo_url"].removeprefix(PHOTO_PATH)
    assert share_id != listing_id
    assert store.public_photo(share_id) == store.get_photo(p.id)
    assert [s["id"] for s in store.photo_shares(p.id)] == [share_id]
    store.withdraw_photo_share(p.id, share_id)
    with pytest.raises(NotFound):
        store.public_photo(share_id)


def test_underage_report_confirmed_deletes_the_account(store, path):
    reporter, _ = make(store, "reporter_1")
    reported, _ = make(store, "looks_young", bio="unique-bio-8c1f")
    with pytest.raises(Invalid):
        store.report_account(reporter.id, "looks_young", "too young")
    with pytest.raises(Invalid):
        store.report_account(reporter.id, "reporter_1", "underage")
    assert "underage" in REPORT_REASONS
    spam = store.report_account(reporter.id, "looks_young", "spam")
    report_id = store.report_account(reporter.id, "looks_young", "underage")
    assert [r["report_id"] for r in store.underage_reports()] == [report_id]
    with pytest.raises(Invalid):
        store.confirm_underage(spam)
    with pytest.raises(NotFound):
        store.confirm_underage("no-such-report")
    store.confirm_underage(report_id)
    with pytest.raises(NotFound):
        store.get_profile(reported.id)
    assert store.underage_reports() == []
    store.checkpoint()
    assert b"unique-bio-8c1f" not in file_bytes(path)
    assert store.audit_log()[-1]["detail"]["reason"] == "underage_confirmed"
