"""A small realistic catalogue: the seed document's tags and a few dozen customers."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ac import ACState
    from .klcode import KlCodeState

SEED_TAGS = [
    "VIP Customer",
    "Beef Lover",
    "Seafood Fan",
    "Chicken Preferred",
    "New Customer",
    "Engaged Customer",
    "Loyal Customer",
    "At Risk",
    "Churned",
    "Cancelled - Last 30 Days",
    "Reactivated",
    "Webinar Attendee - March 2026",
]

FIRST = [
    "Jane",
    "Omar",
    "Lucia",
    "Ken",
    "Priya",
    "Tom",
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Eva",
    "Finn",
]
LAST = ["Doe", "Haddad", "Rossi", "Sato", "Patel", "Okafor", "Silva", "Berg", "Martin"]


def customers(n: int = 36) -> list[tuple[str, str, str]]:
    rng = random.Random(42)  # the same sandbox every time
    out = []
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], LAST[(i * 7) % len(LAST)]
        out.append((f"{first.lower()}.{last.lower()}{i}@example.com", first, last))
    rng.shuffle(out)
    return out


def seed(ac: ACState, klcode: KlCodeState) -> None:
    """Tags in both systems; 30 customers in both, 3 only in KlCode, 3 only in AC."""
    for tag in SEED_TAGS:
        ac.add_tag(tag)
    klcode.catalogue.update(SEED_TAGS)
    people = customers(36)
    for i, (email, first, last) in enumerate(people):
        if i < 33:
            klcode.add_customer(email)
        if i < 30 or i >= 33:
            ac.add_contact(
                email.title() if i % 5 == 0 else email, first, last
            )  # AC keeps its own casing
