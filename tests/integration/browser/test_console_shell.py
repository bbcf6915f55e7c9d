"""The console's shell in a real browser: the key form, a wrong or revoked key, the views, size."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.integration

BUDGET_BYTES = 300 * 1024


def test_the_key_opens_the_console_and_stays_for_the_tab(console, api_key) -> None:
    page = console.page
    console.open()
    expect(page.get_by_role("heading", name="genmesh console")).to_be_visible()
    console.shot("key-form")
    console.enter_key(api_key)
    expect(page.get_by_role("heading", name="Generate an image")).to_be_visible()
    expect(page.get_by_role("navigation", name="Views")).to_be_visible()
    # The model picker is filled from ListModels with the key just given.
    expect(page.locator("select[name=model] option").first).not_to_have_text("loading models…")
    assert page.evaluate("sessionStorage.getItem('genmesh.apiKey')") == api_key
    assert page.evaluate("localStorage.getItem('genmesh.apiKey')") is None  # not remembered unless asked
    page.reload()
    expect(page.get_by_role("heading", name="Generate an image")).to_be_visible()  # kept for the tab
    console.shot("image-form")


def test_remember_on_this_device_keeps_the_key_in_a_new_tab(console, api_key) -> None:
    page = console.page
    console.open()
    console.enter_key(api_key, remember=True)
    expect(page.get_by_role("heading", name="Generate an image")).to_be_visible()
    second = page.context.new_page()  # a new tab: sessionStorage is empty there, localStorage is not
    second.goto(f"{console.base_url}/ui/#/models")
    expect(second.get_by_role("heading", name="Models")).to_be_visible()
    second.close()
    page.get_by_role("button", name="Change key").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("localStorage.getItem('genmesh.apiKey')") is None


def test_a_wrong_key_shows_a_clear_message_and_the_key_form(console) -> None:
    page = console.page
    console.allowed_errors = ["401"]  # the refused call itself is logged by the browser
    console.open()
    console.enter_key("gm_not-a-key-of-this-mesh")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("refused this key")
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.get_by_role("navigation", name="Views")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('genmesh.apiKey')") is None
    console.shot("wrong-key")


def test_a_revoked_key_mid_session_brings_back_the_key_form(console, api_key) -> None:
    page = console.page
    console.allowed_errors = ["401"]
    console.open()
    console.enter_key(api_key)
    expect(page.get_by_role("heading", name="Generate an image")).to_be_visible()
    # The stored key stops working (revoked): the next call is refused and the form comes back.
    page.evaluate("sessionStorage.setItem('genmesh.apiKey', 'gm_revoked')")
    page.get_by_role("link", name="Models").click()
    expect(page.get_by_role("alert")).to_contain_text("refused this key")
    expect(page.get_by_label("API key")).to_be_visible()
    console.shot("revoked-key")


def test_the_first_load_is_within_budget_and_offline(console) -> None:
    """What the browser actually transferred for the first page (gzipped by the front door)."""
    page = console.page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    console.open()
    expect(page.get_by_label("API key")).to_be_visible()
    page.wait_for_load_state("networkidle")
    transferred = page.evaluate(
        """() => [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]
                 .reduce((sum, entry) => sum + entry.transferSize, 0)"""
    )
    encodings = page.evaluate(
        "performance.getEntriesByType('resource').map((entry) => entry.encodedBodySize < entry.decodedBodySize)"
    )
    print(f"console first load ({console.size}): {transferred} bytes over the wire, {len(requests)} requests")
    assert 0 < transferred <= BUDGET_BYTES
    assert all(encodings), "every script and style arrives compressed"
    assert all(url.startswith(console.base_url) for url in requests), requests  # nothing from another host


def test_every_view_opens_with_the_keyboard(console, api_key) -> None:
    page = console.page
    console.open()
    console.enter_key(api_key)
    expect(page.get_by_role("heading", name="Generate an image")).to_be_visible()
    # A phone's keypad offers a decimal point where a value may be fractional, digits only elsewhere.
    expect(page.locator("input[name=guidance_scale]")).to_have_attribute("inputmode", "decimal")
    expect(page.locator("input[name=strength]")).to_have_attribute("inputmode", "decimal")
    expect(page.locator("input[name=steps]")).to_have_attribute("inputmode", "numeric")
    for name, heading in (("Video", "Generate a video"), ("Text", "Chat"), ("Character", "Make a character"),
                          ("Jobs", "Jobs"), ("Library", "Library"), ("Training", "Training"), ("Models", "Models"),
                          ("Status", "Status")):  # fmt: skip
        link = page.get_by_role("link", name=name, exact=True)
        link.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        assert page.get_by_role("link", name=name, exact=True).get_attribute("aria-current") == "page"
        if name == "Models":
            expect(page.locator("[data-service=image] .badge", has_text="default").first).to_be_visible()
            # Every model of every service says where it stands, by one rule (Video's default too).
            expect(page.locator("[data-service=text] li[data-state=loaded]").first).to_be_visible()
            for service in ("text", "image", "video"):
                items = page.locator(f"[data-service={service}] ul.models > li")
                expect(items.first).to_be_visible()
                states = set(items.evaluate_all("items => items.map((item) => item.dataset.state)"))
                assert states <= {"loaded", "loads on first use", "not downloaded"}, (service, states)
        if name == "Status":  # health, queue depth and memory of each service (GET /v1/status)
            for service in ("text", "image", "video", "agent", "training", "models"):
                row = page.locator(f"tr[data-service={service}]")
                expect(row).to_have_attribute("data-state", "up")
                expect(row).to_have_attribute("data-queue", re.compile(r"^\d+$"))
                expect(row.locator("td.device")).to_have_text("none in use (CPU)")  # this mesh runs on the CPU
                expect(row.locator("td.memory")).to_have_text(re.compile(r"^\d+(\.\d)? (MiB|GiB)$"))
        if name == "Training":  # the registry answers (it may be empty on a fresh mesh)
            expect(page.locator(".registry .versions-status")).not_to_have_text("Loading…")
        if name == "Jobs":  # every service listed its jobs (none failed)
            expect(page.locator(".view-jobs > p.hint")).to_contain_text("refreshed")
            expect(page.locator(".view-jobs .error")).to_have_count(0)
        if name == "Library":
            expect(page.locator(".view-library .toolbar .hint")).not_to_have_text("Loading…")
        console.shot(name.lower())
