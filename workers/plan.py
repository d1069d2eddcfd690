"""What a reconciliation must change, as a pure function of who holds the tag where.

- one-way (A -> B): B becomes equal to A for this tag (adds and removals in B only);
- bidirectional: a three-way comparison against the set both sides agreed on at the last
  reconciliation (the base): a tag removed on one side since then is removed on the other, one
  added on either side is added to the other. With no base (the first run) nothing is removed:
  we cannot tell "removed here" from "never added there".
"""

from __future__ import annotations

from dataclasses import dataclass, field

SAMPLE = 50  # emails listed per action in a plan's summary (dry runs show them)


@dataclass(frozen=True)
class Plan:
    add_ac: frozenset[str] = field(default_factory=frozenset)
    remove_ac: frozenset[str] = field(default_factory=frozenset)
    add_klcode: frozenset[str] = field(default_factory=frozenset)
    remove_klcode: frozenset[str] = field(default_factory=frozenset)
    first_run: bool = False  # bidirectional without a base: additions only

    @property
    def actions(self) -> int:
        return (
            len(self.add_ac) + len(self.remove_ac) + len(self.add_klcode) + len(self.remove_klcode)
        )

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"first_run": self.first_run, "actions": self.actions}
        for name in ("add_ac", "remove_ac", "add_klcode", "remove_klcode"):
            emails = sorted(getattr(self, name))
            out[name] = {"count": len(emails), "emails": emails[:SAMPLE]}
        return out


def plan(direction: str, *, klcode: set[str], ac: set[str], base: set[str] | None) -> Plan:
    """The changes that bring both sides in line, for sets of normalised emails."""
    if direction == "klcode_to_ac":
        return Plan(add_ac=frozenset(klcode - ac), remove_ac=frozenset(ac - klcode))
    if direction == "ac_to_klcode":
        return Plan(add_klcode=frozenset(ac - klcode), remove_klcode=frozenset(klcode - ac))
    if direction != "bidirectional":
        raise ValueError(f"unknown direction {direction!r}")
    only_kl, only_ac = klcode - ac, ac - klcode
    if base is None:
        return Plan(add_ac=frozenset(only_kl), add_klcode=frozenset(only_ac), first_run=True)
    return Plan(
        add_ac=frozenset(only_kl - base),  # added in KlCode since the base
        remove_klcode=frozenset(only_kl & base),  # removed in AC since the base
        add_klcode=frozenset(only_ac - base),  # added in AC since the base
        remove_ac=frozenset(only_ac & base),  # removed in KlCode since the base
    )


def apply(p: Plan, *, klcode: set[str], ac: set[str]) -> tuple[set[str], set[str]]:
    """Both sides after every action of `p` succeeded (for tests and the next base)."""
    return (klcode | p.add_klcode) - p.remove_klcode, (ac | p.add_ac) - p.remove_ac
