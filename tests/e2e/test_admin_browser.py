"""The admin page in real headless Chromium (Debian's, driven by Playwright) against the stack."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..harness import Stack

pytestmark = pytest.mark.integration
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TAGSYNC_TEST_ARTIFACTS", "test-artifacts"))
TOKEN = "browser-admin-token"


@pytest.fixture
def page(stack_factory: Any, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Stack]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium (apt-get install chromium; .ci/run does)")
    stack: Stack = stack_factory(extra_env={"ADMIN_TOKEN": TOKEN})
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(
            http_credentials={"username": "ops", "password": TOKEN}, base_url=stack.base
        )
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        try:
            yield pg, stack
        finally:
            failed = getattr(request.node, "rep_call", None)
            if failed is not None and failed.failed:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
            browser.close()


def test_mappings_lifecycle_in_the_browser(page: tuple[Any, Stack]) -> None:
    pg, stack = page
    tag = "Chicken Preferred"
    stack.sandbox.ac.add_tag(tag)
    email = stack.customer("browser@example.com")
    cid = stack.sandbox.klcode.customer_by_email(email)
    stack.sandbox.klcode.customers[cid]["tags"].add(tag)  # drift: KlCode has it, AC does not

    pg.goto("/")
    pg.select_option("select[name=klcode_tag]", tag)
    pg.fill("input[name=ac_tag_name]", tag)
    pg.select_option("select[name=direction]", "klcode_to_ac")
    pg.click("text=Save mapping")
    row = pg.locator("#mappings tbody tr", has_text=tag)
    sync_api.expect(row).to_contain_text("KlCode → ActiveCampaign")
    sync_api.expect(pg.locator(".flash")).to_contain_text("Added mapping")

    # Sync Now shows a dry-run preview first; nothing changes until "Run it now".
    row.locator("button[name=sync_now]").click()
    sync_api.expect(pg.locator("#plan")).to_contain_text("Add in ActiveCampaign")
    assert tag not in stack.sandbox.ac.tags_of(email)
    pg.click("#run-now")
    sync_api.expect(pg.locator("#done")).to_be_visible()
    assert tag in stack.sandbox.ac.tags_of(email)

    # Edit the direction.
    pg.goto("/")
    pg.locator("#mappings tbody tr", has_text=tag).locator("text=Edit").click()
    pg.select_option("select[name=direction]", "bidirectional")
    pg.click("text=Save")
    sync_api.expect(pg.locator("#mappings tbody tr", has_text=tag)).to_contain_text("Bidirectional")

    # The sync log, filtered by email.
    pg.goto("/log")
    pg.fill("input[name=email]", email)
    pg.click("text=Filter")
    rows = pg.locator("#log tbody tr")
    sync_api.expect(rows.first).to_contain_text(email)
    assert all(email in t for t in rows.all_inner_texts())

    # Delete, after a confirmation that says the tags stay.
    pg.goto("/")
    messages: list[str] = []
    pg.once("dialog", lambda d: (messages.append(d.message), d.accept()))
    pg.locator("#mappings tbody tr", has_text=tag).locator("button.danger").click()
    sync_api.expect(pg.locator(".flash")).to_contain_text("stay in both systems")
    assert "stay in both systems" in messages[0]
    sync_api.expect(pg.locator("#mappings tbody tr", has_text=tag)).to_have_count(0)
    assert tag in stack.sandbox.ac.tags_of(email)  # deleting a mapping removes no tag


def test_form_errors_are_shown_inline(page: tuple[Any, Stack]) -> None:
    pg, _ = page
    pg.goto("/")
    pg.select_option("select[name=klcode_tag]", "VIP Customer")
    pg.fill("input[name=ac_tag_id]", "999999")
    pg.click("text=Save mapping")
    sync_api.expect(pg.locator(".err[data-field=ac_tag_id]")).to_contain_text(
        "no tag with id 999999"
    )
