from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapping_store import DuplicateMapping, InvalidMapping, MappingNotFound, Store

from ..harness import reset_database

POSTGRES_URL = os.environ.get("TAGSYNC_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if not POSTGRES_URL:
        pytest.skip("TAGSYNC_TEST_POSTGRES_URL is not set (.ci/run provides a PostgreSQL server)")
    return POSTGRES_URL


def _wipe(url: str) -> None:
    if url.startswith("postgresql"):
        reset_database(url)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every store test runs on SQLite and, where one is available, a real PostgreSQL."""
    url = _url(request.param, tmp_path)
    _wipe(url)
    s = Store(url)
    s.init_schema()
    yield s
    s.dispose()
    _wipe(url)


def test_create_and_find_mapping_by_either_name(store: Store) -> None:
    m = store.create_mapping(klcode_tag="VIP Customer", ac_tag_id=64, ac_tag_name="VIP Customer ")
    assert m.ac_tag_name == "VIP Customer"
    assert store.find_by_klcode_tag("vip customer").id == m.id
    assert store.find_by_ac_tag_name("  VIP customer ").id == m.id
    assert store.find_by_ac_tag_id(64).id == m.id
    assert store.find_by_ac_tag_name("VIP") is None


def test_exact_ac_spelling_wins_over_case_variant(store: Store) -> None:
    store.create_mapping(klcode_tag="a", ac_tag_id=1, ac_tag_name="vip")
    b = store.create_mapping(klcode_tag="b", ac_tag_id=2, ac_tag_name="VIP")
    assert store.find_by_ac_tag_name("VIP").id == b.id


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"klcode_tag": " vip CUSTOMER", "ac_tag_id": 2}, "klcode_tag"),
        ({"klcode_tag": "Other", "ac_tag_id": 1}, "ac_tag_id"),
    ],
)
def test_duplicates_are_refused(store: Store, second: dict, field: str) -> None:
    store.create_mapping(klcode_tag="VIP Customer", ac_tag_id=1, ac_tag_name="x")
    with pytest.raises(DuplicateMapping) as exc:
        store.create_mapping(ac_tag_name="y", **second)
    assert exc.value.field == field


def test_update_checks_uniqueness_and_fields(store: Store) -> None:
    a = store.create_mapping(klcode_tag="A", ac_tag_id=1, ac_tag_name="A")
    store.create_mapping(klcode_tag="B", ac_tag_id=2, ac_tag_name="B")
    with pytest.raises(DuplicateMapping):
        store.update_mapping(a.id, ac_tag_id=2)
    with pytest.raises(InvalidMapping):
        store.update_mapping(a.id, direction="sideways")
    updated = store.update_mapping(a.id, direction="ac_to_klcode", active=False)
    assert (updated.direction, updated.active) == ("ac_to_klcode", False)
    assert updated.updated_at >= a.updated_at
    with pytest.raises(MappingNotFound):
        store.update_mapping(999, active=True)


def test_delete(store: Store) -> None:
    m = store.create_mapping(klcode_tag="A", ac_tag_id=1, ac_tag_name="A")
    store.delete_mapping(m.id)
    assert store.list_mappings() == []
    with pytest.raises(MappingNotFound):
        store.delete_mapping(m.id)


def test_allows_follows_direction(store: Store) -> None:
    m = store.create_mapping(klcode_tag="A", ac_tag_id=1, ac_tag_name="A", direction="klcode_to_ac")
    assert m.allows("klcode", "ac") and not m.allows("ac", "klcode")
    b = store.update_mapping(m.id, direction="bidirectional")
    assert b.allows("klcode", "ac") and b.allows("ac", "klcode")


def test_one_log_entry_per_event_across_retries(store: Store) -> None:
    store.record_outcome(
        source="klcode", outcome="failed", event_id="kl:1", email="A@X.com", attempts=1
    )
    store.record_outcome(
        source="klcode", outcome="applied", event_id="kl:1", email="a@x.com", attempts=2
    )
    store.record_outcome(source="ac", outcome="echo", event_id="ac:2", email="b@x.com")
    entries = store.sync_log()
    assert [(e.event_id, e.outcome, e.attempts) for e in entries] == [
        ("ac:2", "echo", 1),
        ("kl:1", "applied", 2),
    ]
    assert [e.event_id for e in store.sync_log(email=" A@x.COM")] == ["kl:1"]
    assert store.sync_log(outcome="echo")[0].event_id == "ac:2"
    assert store.sync_log(before=entries[0].id)[0].event_id == "kl:1"
    with pytest.raises(ValueError, match="unknown outcome"):
        store.record_outcome(source="ac", outcome="maybe")


@pytest.mark.parametrize("backend", BACKENDS)
def test_schema_init_is_safe_concurrently(backend: str, tmp_path: Path) -> None:
    url = _url(backend, tmp_path)
    _wipe(url)
    errors: list[BaseException] = []

    def init() -> None:
        try:
            Store(url).init_schema()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=init) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Store(url).list_mappings() == []
    _wipe(url)
