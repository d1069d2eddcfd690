"""Thin KlCode REST client (DESIGN.md section 8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .errors import KlCodePermanentError, KlCodeTransientError
from .http import JsonApiClient

TAG_CUSTOMERS_PAGE = 500


@dataclass(frozen=True)
class Customer:
    id: int
    email: str
    tags: tuple[str, ...] = ()


def _path_tag(tag: str) -> str:
    return quote(tag, safe="")


class KlCodeClient(JsonApiClient):
    """KlCode API with a bearer key. Changes made here emit webhooks like any other change."""

    system = "klcode"
    transient_error = KlCodeTransientError
    permanent_error = KlCodePermanentError

    def __init__(self, *, api_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api_key = api_key

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": f"Bearer {self._api_key}"}

    def find_customer(self, email: str) -> Customer | None:
        body = self.request("GET", "/api/v1/customers", params={"email": email}).body or {}
        wanted = email.strip().lower()
        for c in body.get("customers") or []:
            if str(c.get("email", "")).strip().lower() == wanted:
                return Customer(int(c["id"]), str(c["email"]), tuple(c.get("tags") or ()))
        return None

    def add_tag(self, customer_id: int, tag: str) -> bool:
        """Tag a customer; True if added, False if it was already there (200)."""
        resp = self.request("POST", f"/api/v1/customers/{customer_id}/tags", json={"tag": tag})
        return resp.status == 201

    def remove_tag(self, customer_id: int, tag: str) -> bool:
        """Untag a customer; True if removed, False if it was not there (404)."""
        resp = self.request(
            "DELETE", f"/api/v1/customers/{customer_id}/tags/{_path_tag(tag)}", passthrough=(404,)
        )
        return resp.status != 404

    def list_tags(self) -> list[tuple[str, int]]:
        body = self.request("GET", "/api/v1/tags").body or {}
        return [(str(t["name"]), int(t.get("customer_count") or 0)) for t in body.get("tags") or []]

    def tag_customers(
        self, tag: str, *, page: int = 1, per_page: int = TAG_CUSTOMERS_PAGE
    ) -> tuple[list[Customer], int]:
        """One page of the customers holding `tag`, and the total."""
        body = (
            self.request(
                "GET",
                f"/api/v1/tags/{_path_tag(tag)}/customers",
                params={"page": page, "per_page": per_page},
            ).body
            or {}
        )
        customers = [Customer(int(c["id"]), str(c["email"])) for c in body.get("customers") or []]
        return customers, int(body.get("total") or 0)
