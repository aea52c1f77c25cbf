"""Quieting repeated cards in the review console, in Chromium (issue 16): override a card with
"Already addressed", run again, see it listed as quieted for the patient, lift it, see it again.
The browser and its checks come from test_console_browser.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import EXAMPLE_NOW
from playwright.sync_api import Page, expect
from servers import ServiceProcess, start_service, stop
from test_console_browser import CONTRAST_JS, browser, page, run_example, shot  # noqa: F401


@pytest.fixture(scope="module")
def quiet_console(tmp_path_factory) -> Iterator[ServiceProcess]:
    """A service of its own (its quiet entries are this test's), clock on the examples' day."""
    running = start_service(
        tmp_path_factory.mktemp("quiet-console"), {"CDS_FIXED_NOW": EXAMPLE_NOW}, workers=1
    )
    yield running
    stop(running.process)


def run_again(tab: Page) -> None:
    tab.locator("#status").evaluate("element => { element.textContent = ''; }")
    tab.get_by_role("button", name="Run the service").click()
    expect(tab.locator("#status")).to_contain_text("from cramp-sciatica-")


def test_a_card_overridden_as_addressed_is_listed_as_quieted_and_lifted(page, quiet_console):  # noqa: F811
    run_example(page, quiet_console.base_url, "scenarios/cramps-only")
    card = page.locator("article.cds-card-info", has_text="No potassium")
    expect(card).to_have_count(1)
    card.get_by_label("Override reason").select_option(label="Already addressed")
    card.get_by_role("button", name="Override").click()
    expect(card.locator(".feedback-status")).to_contain_text("Overridden: Already addressed")

    run_again(page)
    expect(page.locator("article.cds-card")).to_have_count(0)
    expect(page.locator(".no-cards")).to_contain_text("quieted by feedback are listed above")
    entry = page.locator("section.quieted li")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text(
        "quieted by feedback: cramp-labs-missing, until 2026-12-20, reason Already addressed"
    )
    shot(page, "console-quieted-card")
    contrast = page.evaluate(CONTRAST_JS, [".quieted-line", ".quieted h3", "button.lift"])
    assert contrast and all(ratio >= 4.5 for *_, ratio in contrast), contrast

    entry.get_by_role("button", name="Lift").click()
    expect(entry.locator(".lift-status")).to_contain_text("Lifted")
    run_again(page)
    expect(page.locator("article.cds-card-info", has_text="No potassium")).to_have_count(1)
    expect(page.locator("section.quieted")).to_have_count(0)
