"""Creating and editing mappings, with the AC tag id checked against AC (DESIGN.md section 6).

Shared by the CLI and the JSON API so both give the same answers.
"""

from __future__ import annotations

from typing import Any

from mapping_store import Mapping, Store

from .activecampaign import ActiveCampaignClient
from .errors import ACError, TransientError


class UnknownACTag(Exception):
    def __init__(self, tag_id: int) -> None:
        super().__init__(f"ActiveCampaign has no tag with id {tag_id}")
        self.tag_id = tag_id


class ACUnavailable(Exception):
    pass


def ac_tag_name(ac: ActiveCampaignClient, tag_id: int) -> str:
    """The name AC gives tag `tag_id`.

    Raises:
        UnknownACTag: AC answered 404.
        ACUnavailable: AC could not be asked (down, rate limited, bad token).
    """
    try:
        tag = ac.get_tag(tag_id)
    except TransientError as exc:
        raise ACUnavailable(f"ActiveCampaign is unreachable: {exc.reason}") from exc
    except ACError as exc:
        raise ACUnavailable(f"ActiveCampaign refused the lookup: {exc}") from exc
    if tag is None:
        raise UnknownACTag(tag_id)
    return tag.name


def create_mapping(
    store: Store,
    ac: ActiveCampaignClient | None,
    *,
    klcode_tag: str,
    ac_tag_id: int,
    direction: str = "bidirectional",
    active: bool = True,
    schedule: str = "off",
    ac_tag_name_override: str | None = None,
) -> Mapping:
    """Check the AC tag id against AC (unless a name is given and AC is not), then store it."""
    if ac is not None:
        name = ac_tag_name(ac, ac_tag_id)
    elif ac_tag_name_override:
        name = ac_tag_name_override
    else:
        raise ACUnavailable("ActiveCampaign is not configured; cannot check the AC tag id")
    return store.create_mapping(
        klcode_tag=klcode_tag,
        ac_tag_id=ac_tag_id,
        ac_tag_name=name,
        direction=direction,
        active=active,
        schedule=schedule,
    )


def update_mapping(
    store: Store, ac: ActiveCampaignClient | None, mapping_id: int, **fields: Any
) -> Mapping:
    """Apply changes; a new AC tag id is checked against AC and its name filled in."""
    current = store.get_mapping(mapping_id)
    if "ac_tag_id" in fields and fields["ac_tag_id"] != current.ac_tag_id:
        if ac is None:
            raise ACUnavailable("ActiveCampaign is not configured; cannot check the AC tag id")
        fields["ac_tag_name"] = ac_tag_name(ac, fields["ac_tag_id"])
    return store.update_mapping(mapping_id, **fields)
