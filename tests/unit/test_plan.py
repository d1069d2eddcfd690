"""Property tests of the reconciliation plan: the rules of issue 4, and idempotence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.plan import apply, plan

emails = st.frozensets(st.sampled_from([f"c{i}@x.com" for i in range(12)]))


@given(kl=emails, ac=emails)
def test_one_way_makes_the_target_equal_to_the_source(
    kl: frozenset[str], ac: frozenset[str]
) -> None:
    p = plan("klcode_to_ac", klcode=set(kl), ac=set(ac), base=None)
    new_kl, new_ac = apply(p, klcode=set(kl), ac=set(ac))
    assert new_kl == kl and new_ac == kl
    q = plan("ac_to_klcode", klcode=set(kl), ac=set(ac), base=None)
    new_kl, new_ac = apply(q, klcode=set(kl), ac=set(ac))
    assert new_ac == ac and new_kl == ac
    # The source is never written.
    assert not p.add_klcode and not p.remove_klcode and not q.add_ac and not q.remove_ac


@given(kl=emails, ac=emails, base=emails)
def test_bidirectional_three_way(
    kl: frozenset[str], ac: frozenset[str], base: frozenset[str]
) -> None:
    p = plan("bidirectional", klcode=set(kl), ac=set(ac), base=set(base))
    new_kl, new_ac = apply(p, klcode=set(kl), ac=set(ac))
    assert new_kl == new_ac
    for email in kl | ac | base:
        in_kl, in_ac, in_base = email in kl, email in ac, email in base
        if in_kl and in_ac:
            assert email in new_kl  # both agree: kept
        elif in_kl != in_ac and in_base:
            assert email not in new_kl  # removed on one side since the base: removed on both
        elif in_kl != in_ac:
            assert email in new_kl  # added on one side since the base: added on both
        else:
            assert email not in new_kl  # on neither side: stays off


@given(kl=emails, ac=emails)
def test_first_run_only_adds(kl: frozenset[str], ac: frozenset[str]) -> None:
    p = plan("bidirectional", klcode=set(kl), ac=set(ac), base=None)
    assert p.first_run and not p.remove_ac and not p.remove_klcode
    new_kl, new_ac = apply(p, klcode=set(kl), ac=set(ac))
    assert new_kl == new_ac == kl | ac


@given(
    kl=emails,
    ac=emails,
    base=st.one_of(st.none(), emails),
    direction=st.sampled_from(["klcode_to_ac", "ac_to_klcode", "bidirectional"]),
)
def test_running_twice_changes_nothing_the_second_time(kl, ac, base, direction) -> None:
    first = plan(direction, klcode=set(kl), ac=set(ac), base=None if base is None else set(base))
    new_kl, new_ac = apply(first, klcode=set(kl), ac=set(ac))
    new_base = new_kl & new_ac  # what both sides agree on after the run
    second = plan(direction, klcode=new_kl, ac=new_ac, base=new_base)
    assert second.actions == 0


def test_summary_lists_small_plans() -> None:
    p = plan("klcode_to_ac", klcode={"a@x.com", "b@x.com"}, ac={"c@x.com"}, base=None)
    s = p.summary()
    assert s["add_ac"] == {"count": 2, "emails": ["a@x.com", "b@x.com"]}
    assert s["remove_ac"] == {"count": 1, "emails": ["c@x.com"]}
    assert s["actions"] == 3
