"""The review console in a real browser: Playwright driving Debian's Chromium.

The session installs what it needs: Debian's `chromium` package (apt-get) when
/usr/bin/chromium is missing; Playwright's Python package comes with the `test` extra. No browser
is downloaded from the internet (no `playwright install`). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE_NOW
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from servers import ServiceProcess, debian_package, start_service, stop

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


def install_chromium() -> Path:
    """Debian's Chromium, installed with apt-get if it is not there yet."""
    return debian_package(CHROMIUM, "chromium")


@pytest.fixture(scope="module")
def console_service(tmp_path_factory) -> Iterator[ServiceProcess]:
    """A service of its own (no auth, so the console is on), clock pinned to the examples'."""
    running = start_service(
        tmp_path_factory.mktemp("console"), {"CDS_FIXED_NOW": EXAMPLE_NOW}, workers=2
    )
    yield running
    stop(running.process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[BrowserContext]:
    executable = install_chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(executable),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    """A tab that fails the test on any script error or console error (CSP violations too)."""
    tab = browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    yield tab
    tab.close()
    assert problems == []


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# Text of the page and the colours it is drawn on: WCAG 2.1 AA asks 4.5:1 for normal text.
CONTRAST_JS = """
(selectors) => {
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const channel = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
  };
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const found = [];
  for (const selector of selectors) {
    for (const element of document.querySelectorAll(selector)) {
      if (element.disabled || !element.textContent.trim() || !element.offsetParent) continue;
      const a = luminance(rgb(getComputedStyle(element).color).slice(0, 3));
      const b = luminance(background(element));
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      found.push([selector, element.textContent.trim().slice(0, 40), ratio]);
    }
  }
  return found;
}
"""
TEXT = [
    "nav a",
    "h1",
    "label",
    ".help",
    ".indicator-text",
    ".summary",
    ".detail p",
    ".detail li",
    ".source a",
    ".rule-id",
    "button",
    ".tag",
    ".actions-list li",
    ".links a",
    ".feedback-status",
    ".comparison",
    "#status",
]


def low_contrast(page: Page) -> list[tuple[str, str, float]]:
    measured = page.evaluate(CONTRAST_JS, TEXT)
    assert measured and all(ratio >= 1 for *_, ratio in measured), measured  # not NaN
    return [(selector, text, round(ratio, 2)) for selector, text, ratio in measured if ratio < 4.5]


def run_example(page: Page, base_url: str, key: str) -> None:
    page.goto(f"{base_url}/console/")
    page.get_by_label("Example").select_option(key)
    expect(page.locator("#status")).to_contain_text(f"Loaded example {key}")
    page.get_by_role("button", name="Run the service").click()
    expect(page.locator("#status")).to_contain_text("from cramp-sciatica-")


def test_review_accept_override_and_see_both_in_analytics(page, console_service):
    base = console_service.base_url

    # 1. An example with a critical card: its indicator, evidence, source and actions show.
    run_example(page, base, "scenarios/cauda-equina-coded")
    card = page.locator("article.cds-card-critical")
    expect(card).to_have_count(1)
    expect(card.locator(".indicator-critical")).to_have_text("Critical")
    expect(card.get_by_role("heading", level=3)).to_contain_text(
        "Suspected cauda equina syndrome: emergency assessment now"
    )
    detail = card.locator(".detail")
    expect(detail.locator("strong", has_text="Findings")).to_be_visible()
    expect(detail.locator("li", has_text="Cauda equina syndrome")).to_contain_text("G83.4")
    expect(card.locator(".source a")).to_have_attribute(
        "href",
        "https://cks.nice.org.uk/topics/sciatica-lumbar-radiculopathy/diagnosis/red-flag-symptoms-signs/",
    )
    expect(page.locator(".comparison")).to_contain_text("As the example expects")
    # The raw JSON is one click away.
    page.get_by_text("Raw response JSON").click()
    expect(page.locator("#raw-response")).to_contain_text('"indicator": "critical"')
    shot(page, "console-critical-card")
    assert low_contrast(page) == []

    # 2. Accept a suggestion: real feedback goes to the service.
    accept = card.get_by_role("button", name="Refer to the emergency department now")
    accept.click()
    expect(accept).to_have_attribute("aria-pressed", "true")
    expect(card.locator(".feedback-status")).to_contain_text("feedback sent to the service")

    # 3. Another card, overridden with one of its reasons, with the keyboard.
    run_example(page, base, "scenarios/serious-fever-fahrenheit")
    warning = page.locator("article.cds-card-warning", has_text="serious")
    expect(warning.locator(".indicator-warning")).to_have_text("Warning")
    warning.get_by_label("Override reason").select_option(label="Not applicable to this patient")
    warning.get_by_role("button", name="Override").focus()
    page.keyboard.press("Enter")
    expect(warning.locator(".feedback-status")).to_contain_text(
        "Overridden: Not applicable to this patient"
    )
    expect(warning.get_by_role("button", name="Override")).to_be_disabled()
    shot(page, "console-overridden-card")
    assert low_contrast(page) == []

    # 4. Analytics count both.
    page.get_by_role("navigation").get_by_role("link", name="Feedback analytics").click()
    cauda = page.locator('tr[data-rule="cauda-equina-red-flag"]')
    expect(cauda.locator('[data-col="fired"]')).to_have_text("1")
    expect(cauda.locator('[data-col="accepted"]')).to_have_text("1")
    serious = page.locator('tr[data-rule="serious-pathology-red-flag"]')
    expect(serious.locator('[data-col="fired"]')).to_have_text("1")
    expect(serious.locator('[data-col="overridden"]')).to_have_text("1")
    expect(serious.locator('[data-col="reasons"]')).to_contain_text(
        "Not applicable to this patient: 1"
    )
    expect(page.locator("svg.chart rect.bar-accepted")).to_have_count(
        page.locator("#analytics-table tbody tr").count()
    )
    shot(page, "console-analytics")

    # 5. The CSV export holds the same counts.
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = {
        row["rule_id"]: row
        for row in csv.DictReader(io.StringIO(Path(download.value.path()).read_text()))
    }
    assert rows["cauda-equina-red-flag"]["accepted"] == "1"
    assert rows["serious-pathology-red-flag"]["overridden"] == "1"


def test_a_pasted_patient_bundle_is_reviewed_as_a_hook_request(page, console_service):
    import json

    from conftest import load_scenario

    request, _ = load_scenario("quinine-select")
    entries = [{"resource": request["prefetch"]["patient"]}]
    for key in ("conditions", "observations"):
        entries += request["prefetch"][key]["entry"]
    entries += request["context"]["draftOrders"]["entry"]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}

    page.goto(f"{console_service.base_url}/console/")
    page.get_by_label("Hook request or patient Bundle (JSON)").fill(json.dumps(bundle))
    page.get_by_label("Service (hook)").select_option("cramp-sciatica-order-select")
    page.get_by_role("button", name="Run the service").click()
    expect(page.locator("#status")).to_contain_text("from cramp-sciatica-order-select")
    expect(page.locator('article[data-rule="quinine-caution"]')).to_be_visible()
    page.get_by_text("Raw request JSON").click()
    expect(page.locator("#raw-request")).to_contain_text('"selections"')


def test_the_rules_page_and_keyboard_navigation(page, console_service):
    page.goto(f"{console_service.base_url}/console/rules")
    # The first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    expect(page.locator("section.rule")).to_have_count(12)
    section = page.locator("#rule-cauda-equina-red-flag")
    summary = section.locator("details[data-valueset=CAUDA_EQUINA] summary")
    summary.focus()
    page.keyboard.press("Enter")  # a value set opens from the keyboard
    expect(section.locator("details[data-valueset=CAUDA_EQUINA] table")).to_contain_text("G83.4")
    shot(page, "console-rules")
