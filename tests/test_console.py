"""The review console over HTTP (no browser): pages, examples, card rendering, analytics, rules.

The browser flow (clicking, feedback from the page) is in test_console_browser.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import uuid

import pytest
import requests
from conftest import EXAMPLE_NOW, EXAMPLES, scenario_names
from markupsafe import escape
from servers import start_service, stop

from cds_service.console import catalog as console_catalog
from cds_service.console.examples import NotAPatientBundle, request_from_bundle
from cds_service.console.markdown import render, safe_url
from cds_service.rules import RULE_IDS
from cds_service.services import find_service
from cds_service.settings import Settings

PV = "cramp-sciatica-patient-view"


def get(service, path: str, **kwargs) -> requests.Response:
    return requests.get(f"{service.base_url}{path}", timeout=30, **kwargs)


def post(service, path: str, body: object) -> requests.Response:
    return requests.post(f"{service.base_url}{path}", json=body, timeout=30)


def run_example(service, key: str) -> tuple[dict, requests.Response, str]:
    """What the page does: load the example, call the service, have the cards rendered."""
    example = get(service, f"/console/examples/{key}")
    assert example.status_code == 200, example.text
    loaded = example.json()
    request = {**loaded["request"], "hookInstance": str(uuid.uuid4())}
    answer = post(service, f"/cds-services/{loaded['expected']['service']}", request)
    rendered = post(
        service,
        "/console/render",
        {
            "service": loaded["expected"]["service"],
            "response": answer.json(),
            "status": answer.status_code,
            "expected": loaded["expected"]["rule_ids"],
        },
    )
    assert rendered.status_code == 200, rendered.text
    return loaded, answer, rendered.text


# ------------------------------------------------------------------------------ pages


def test_the_console_pages_are_served_with_a_strict_content_security_policy(service):
    for path in ("/console/", "/console/rules", "/console/analytics"):
        page = get(service, path)
        assert page.status_code == 200, path
        assert page.headers["Content-Type"].startswith("text/html")
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert '<html lang="en">' in page.text
        # No inline script or style: everything comes from the package's static files.
        assert "<script>" not in page.text and "<style" not in page.text
        assert " style=" not in page.text and "onclick" not in page.text
        # Nothing is loaded from elsewhere (EHR networks are closed).
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', page.text)


def test_console_without_a_slash_redirects_to_the_page(service):
    page = get(service, "/console", allow_redirects=False)
    assert page.status_code == 308
    assert page.headers["Location"].endswith("/console/")


def test_the_static_files_are_served(service):
    for name, kind in (("console.js", "javascript"), ("console.css", "text/css")):
        response = get(service, f"/console/static/{name}")
        assert response.status_code == 200
        assert kind in response.headers["Content-Type"]


def test_every_form_control_of_the_review_page_has_a_label(service):
    page = get(service, "/console/").text
    ids = re.findall(r'<(?:select|textarea|input)[^>]*\bid="([^"]+)"', page)
    assert {"example", "upload", "request-text", "service", "fresh-instance"} <= set(ids)
    for control in ids:
        assert f'<label for="{control}"' in page, control


def test_the_review_page_offers_every_example_and_every_service(service):
    page = get(service, "/console/").text
    assert REALISTIC
    for key in [f"scenarios/{n}" for n in scenario_names()] + [f"realistic/{n}" for n in REALISTIC]:
        assert f'value="{key}"' in page, key
    for service_id in (
        PV,
        "cramp-sciatica-order-select",
        "cramp-sciatica-order-sign",
        "cramp-sciatica-note-sign",
    ):
        assert f'value="{service_id}"' in page


REALISTIC = sorted(
    p.name.removesuffix(".expected.json")
    for p in (EXAMPLES.parent / "realistic").glob("*.expected.json")
)


@pytest.mark.parametrize(
    "key", [f"scenarios/{n}" for n in scenario_names()] + [f"realistic/{n}" for n in REALISTIC]
)
def test_every_example_can_be_reviewed_and_shows_its_expected_cards(service, key):
    loaded, answer, cards = run_example(service, key)
    assert loaded["clockNote"] is None  # the service's clock is pinned to the examples' day
    assert answer.status_code == 200
    expected = loaded["expected"]["rule_ids"]
    assert re.findall(r'data-rule="([^"]*)"', cards) == expected
    assert "As the example expects" in cards
    for card in answer.json()["cards"]:
        assert f'data-card="{card["uuid"]}"' in cards
        assert escape(card["summary"]) in cards


def test_a_critical_card_renders_with_its_indicator_evidence_source_and_actions(service):
    _, answer, cards = run_example(service, "scenarios/cauda-equina-coded")
    [card] = answer.json()["cards"]
    assert 'class="cds-card cds-card-critical"' in cards
    assert '<span class="indicator-text">Critical</span>' in cards
    assert "<strong>Findings</strong>" in cards
    assert "<li>Cauda equina syndrome (problem list, 17 Nov, ICD-10-CM G83.4)" in cards
    assert f'<a href="{card["source"]["url"]}" rel="noopener noreferrer"' in cards
    for suggestion in card["suggestions"]:
        assert f'data-suggestion="{suggestion["uuid"]}"' in cards
    for reason in card["overrideReasons"]:
        assert f'data-code="{reason["code"]}"' in cards
    for link in card["links"]:
        assert escape(link["label"]) in cards


def test_the_clock_note_says_when_the_service_is_not_pinned_to_the_example_day(tmp_path):
    running = start_service(tmp_path, workers=1)
    try:
        loaded = get(running, "/console/examples/scenarios/cramps-only").json()
        assert "CDS_FIXED_NOW=2026-11-20T12:00:00Z" in loaded["clockNote"]
    finally:
        stop(running.process)


def test_an_error_answer_is_rendered_as_its_issues(service):
    answer = post(service, f"/cds-services/{PV}", {"hook": "patient-view"})
    assert answer.status_code == 400
    rendered = post(
        service,
        "/console/render",
        {"service": PV, "response": answer.json(), "status": answer.status_code},
    )
    assert 'role="alert"' in rendered.text and "The service answered 400" in rendered.text
    assert "hookInstance" in rendered.text


@pytest.mark.parametrize(
    "answer",
    [
        {"cards": [{"detail": 5}]},
        {"cards": [{"overrideReasons": 5}]},
        {"cards": [{"suggestions": 5}]},
        {"cards": [{"links": 5}]},
        {"cards": [{"suggestions": [{"actions": 5}]}]},
        {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "x", "expression": 5}]},
        {"resourceType": "OperationOutcome", "issue": 5},
    ],
    ids=["detail", "overrideReasons", "suggestions", "links", "actions", "expression", "issue"],
)
def test_a_misshapen_answer_is_rendered_without_the_misshapen_part(service, answer):
    rendered = post(service, "/console/render", {"service": PV, "response": answer})
    assert rendered.status_code == 200, rendered.text


def test_an_unknown_example_is_a_400_not_a_file_read(service):
    for key in ("scenarios/nope", "scenarios/..%2F..%2Fpyproject", "other/cramps-only"):
        response = get(service, f"/console/examples/{key}")
        assert response.status_code in (400, 404), key
        assert response.headers["Content-Type"].startswith("application/json")


# ------------------------------------------------------------------------------ sanitising


HOSTILE = {
    "uuid": str(uuid.uuid4()),
    "summary": "<script>alert('summary')</script>",
    "indicator": "critical",
    "detail": (
        "**Bold** <img src=x onerror=alert(1)> [click](javascript:alert(2))\n\n"
        "- <script>alert(3)</script>\n- [ok](https://example.org/a?b=1&c=2)"
    ),
    "source": {
        "label": "<b>label</b>",
        "url": "javascript:alert(4)",
        "topic": {"code": '"><script>alert(5)</script>'},
    },
    "suggestions": [{"label": "<i>s</i>", "uuid": '"onmouseover="alert(6)', "actions": []}],
    "overrideReasons": [{"system": "s", "code": '"><x', "display": "<u>r</u>"}],
    "links": [{"label": "bad", "url": "javascript:alert(7)", "type": "absolute"}],
}


def test_card_content_is_escaped_and_only_http_links_are_made(service):
    rendered = post(service, "/console/render", {"service": PV, "response": {"cards": [HOSTILE]}})
    text = rendered.text
    assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert "<i>" not in text and "<u>" not in text and "<x" not in text
    assert "javascript:" not in text.replace("[click](javascript:alert(2))", "")
    assert 'href="javascript' not in text
    assert "&lt;script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert '<a href="https://example.org/a?b=1&amp;c=2"' in text
    assert "<strong>Bold</strong>" in text
    assert 'data-suggestion="&#34;onmouseover=&#34;alert(6)"' in text


def test_the_markdown_subset_of_the_cards_renders():
    out = render(
        "**Emergency.** Line one\nline two.\n\n**Evidence found**\n\n- a [x|y] (Condition/1)\n"
        "- b *soft*\n  continued\n\n1. first\n2. second\n\n# Heading\n\n`<code>` \\*not em\\*"
    )
    assert out.startswith("<p><strong>Emergency.</strong> Line one\nline two.</p>")
    assert "<ul><li>a [x|y] (Condition/1)</li><li>b <em>soft</em>\ncontinued</li></ul>" in out
    assert "<ol><li>first</li><li>second</li></ol>" in out
    assert '<p class="md-heading"><strong>Heading</strong></p>' in out
    assert "<code>&lt;code&gt;</code> *not em*" in out


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "<a href='javascript:alert(1)'>x</a>",
        "[x](javascript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "**<svg onload=alert(1)>**",
        "`</code><script>`",
        "[<img src=x onerror=alert(1)>](https://example.org)",
        "- <iframe src=//evil>",
        '[x](https://example.org/"onmouseover="alert(1))',
    ],
)
def test_the_markdown_renderer_never_emits_markup_from_its_input(text):
    out = str(render(text))
    for name, attributes in re.findall(r"<([a-zA-Z]+)([^>]*)>", out):
        assert name in {"p", "strong", "em", "code", "a", "ul", "ol", "li", "hr"}, out
        assert re.fullmatch(r'(\s(href|rel|target|class)="[^"<>]*")*', attributes), out
    for href in re.findall(r'href="([^"]*)"', out):
        assert href.startswith("https://"), out


def test_only_absolute_http_urls_are_safe():
    assert safe_url("https://cks.nice.org.uk/x") and safe_url("http://example.org")
    for url in (
        "javascript:alert(1)",
        "data:text/html,x",
        "//evil",
        "/relative",
        "",
        None,
        "https://exa mple.org",
        "vbscript:x",
        "https:\n//x",
    ):
        assert not safe_url(url), url


# ------------------------------------------------------------------------------ bundles


def bundle_of(name: str, kind: str = "collection") -> dict:
    """A patient Bundle holding a scenario's resources, referencing the Patient by urn:uuid
    as Synthea and transaction Bundles do."""
    from conftest import load_scenario

    request, _ = load_scenario(name)
    patient = request["prefetch"]["patient"]
    full_url = f"urn:uuid:{uuid.uuid4()}"
    entries = [{"fullUrl": full_url, "resource": patient}]
    for key in ("conditions", "observations", "medications"):
        for entry in (request["prefetch"].get(key) or {}).get("entry", []):
            resource = json.loads(json.dumps(entry["resource"]))
            for field in ("subject", "patient"):
                if isinstance(resource.get(field), dict):
                    resource[field] = {"reference": full_url}
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource})
    for entry in (request["context"].get("draftOrders") or {}).get("entry", []):
        entries.append({"resource": entry["resource"]})
    if "note" in request["context"]:
        entries.append({"resource": request["context"]["note"]})
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


@pytest.mark.parametrize(
    ("name", "service_id"),
    [
        ("cauda-equina-coded", PV),
        ("mixed-three-causes", PV),
        ("quinine-select", "cramp-sciatica-order-select"),
        ("imaging-early-sign", "cramp-sciatica-order-sign"),
        ("note-sign-cramps", "cramp-sciatica-note-sign"),
    ],
)
def test_a_patient_bundle_becomes_a_request_that_fires_the_same_cards(service, name, service_id):
    from conftest import load_scenario

    _, expected = load_scenario(name)
    wrapped = post(service, "/console/wrap", {"bundle": bundle_of(name), "service": service_id})
    assert wrapped.status_code == 200, wrapped.text
    answer = post(service, f"/cds-services/{service_id}", wrapped.json())
    assert answer.status_code == 200, answer.text
    assert [c["source"]["topic"]["code"] for c in answer.json()["cards"]] == expected["rule_ids"]


def test_a_bundle_that_cannot_be_a_request_says_why(service):
    no_patient = {"resourceType": "Bundle", "type": "collection", "entry": []}
    answer = post(service, "/console/wrap", {"bundle": no_patient, "service": PV})
    assert answer.status_code == 400
    assert "exactly one Patient" in answer.json()["issue"][0]["diagnostics"]
    not_a_list = {"resourceType": "Bundle", "entry": 5}
    answer = post(service, "/console/wrap", {"bundle": not_a_list, "service": PV})
    assert answer.status_code == 400 and "entry must be an array" in answer.text
    with pytest.raises(NotAPatientBundle, match="draft orders"):
        request_from_bundle(
            bundle_of("cauda-equina-coded"), find_service("cramp-sciatica-order-sign")
        )
    with pytest.raises(NotAPatientBundle, match="DocumentReference"):
        request_from_bundle(
            bundle_of("cauda-equina-coded"), find_service("cramp-sciatica-note-sign")
        )
    with pytest.raises(NotAPatientBundle, match="not a FHIR Bundle"):
        request_from_bundle({"resourceType": "Patient"}, find_service(PV))


# ------------------------------------------------------------------------------ analytics


def test_analytics_count_the_feedback_sent_for_the_cards_shown(tmp_path):
    running = start_service(tmp_path, {"CDS_FIXED_NOW": EXAMPLE_NOW}, workers=1)
    try:
        _, answer, _ = run_example(running, "scenarios/serious-fever-fahrenheit")
        cards = {c["source"]["topic"]["code"]: c for c in answer.json()["cards"]}
        serious = cards["serious-pathology-red-flag"]
        association = cards["cramp-sciatica-association"]
        reason = serious["overrideReasons"][1]
        feedback = {
            "feedback": [
                {
                    "card": serious["uuid"],
                    "outcome": "overridden",
                    "overrideReason": {"reason": reason},
                    "outcomeTimestamp": "2026-11-20T12:05:00Z",
                },
                {
                    "card": association["uuid"],
                    "outcome": "overridden",
                    "overrideReason": {"reason": {"system": "x", "code": "=cmd|' /C calc'!A0"}},
                    "outcomeTimestamp": "2026-11-20T12:06:00Z",
                },
            ]
        }
        assert post(running, f"/cds-services/{PV}/feedback", feedback).status_code == 200

        page = get(running, "/console/analytics")
        assert page.status_code == 200
        row = re.search(r'<tr data-rule="serious-pathology-red-flag">.*?</tr>', page.text, re.S)
        assert re.search(r'data-col="fired">1<', row.group(0))
        assert re.search(r'data-col="overridden">1<', row.group(0))
        assert f"{reason['display']}: 1" in row.group(0)
        assert '<svg class="chart"' in page.text
        audit = running.data_dir / "audit.sqlite3"
        with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as db:
            [(patient_hash,)] = db.execute("SELECT DISTINCT patient_hash FROM invocation")
        for identifier in ("serious-fever-fahrenheit", patient_hash, serious["uuid"]):
            assert identifier not in page.text

        exported = get(running, "/console/analytics.csv")
        assert exported.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in exported.headers["Content-Disposition"]
        rows = {r["rule_id"]: r for r in csv.DictReader(io.StringIO(exported.text))}
        assert list(rows)[: len(RULE_IDS)] == list(RULE_IDS)
        assert rows["serious-pathology-red-flag"]["fired"] == "1"
        assert rows["serious-pathology-red-flag"]["fired_warning"] == "1"
        assert rows["serious-pathology-red-flag"]["overridden"] == "1"
        assert rows["cramp-sciatica-association"]["override_reasons"].startswith("'=cmd")

        past = get(running, "/console/analytics.csv?from=2020-01-01&to=2020-01-31")
        assert {r["fired"] for r in csv.DictReader(io.StringIO(past.text))} == {"0"}
    finally:
        stop(running.process)


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-13-01&to=2026-12-01",
        "from=2026-11-20&to=2026-11-19",
        "from=x",
        "to=9999-12-31",  # a real date whose next day is beyond the calendar
    ],
)
def test_a_bad_period_is_refused(service, query):
    exported = get(service, f"/console/analytics.csv?{query}")
    assert exported.status_code == 400
    assert exported.json()["resourceType"] == "OperationOutcome"
    page = get(service, f"/console/analytics?{query}")
    assert page.status_code == 400 and 'role="alert"' in page.text


# ------------------------------------------------------------------------------ rules


def test_the_rules_page_lists_every_rule_with_its_value_sets_codes_and_sources(service):
    page = get(service, "/console/rules").text
    view = console_catalog.catalog()
    assert [r.rule_id for r in view.rules] == list(RULE_IDS)
    assert view.missing == ()
    for rule in view.rules:
        section = re.search(
            rf'<section class="panel rule" id="rule-{rule.rule_id}".*?</section>', page, re.S
        ).group(0)
        assert escape(rule.source.label) in section
        assert rule.indicators
        for indicator in rule.indicators:
            assert f"indicator-{indicator}" in section
        assert rule.value_sets, rule.rule_id
        for value_set in rule.value_sets:
            assert f'data-valueset="{value_set.name}"' in section
            for code in value_set.codes:
                assert f"<code>{escape(code.code)}</code>" in section
                assert escape(code.display) in section


def test_the_rules_page_reads_what_the_rules_use_from_their_code():
    rules = {r.rule_id: r for r in console_catalog.catalog().rules}
    cauda = rules["cauda-equina-red-flag"]
    assert cauda.indicators == ("critical",)
    assert {"CAUDA_EQUINA", "BLADDER_BOWEL", "SADDLE_ANAESTHESIA", "SCIATICA"} <= {
        v.name for v in cauda.value_sets
    }
    assert rules["motor-deficit-red-flag"].indicators == ("critical", "warning")
    assert "BODY_TEMPERATURE" in {v.name for v in rules["serious-pathology-red-flag"].value_sets}
    assert rules["sciatica-management"].depends_on[-1] == "cramp-sciatica-association"
    assert rules["imaging-stewardship"].trigger.startswith("order-select and order-sign")
    g834 = [c for v in cauda.value_sets for c in v.codes if c.code == "G83.4"]
    assert g834 and g834[0].display
    assert console_catalog.catalog().trigger_value_sets[0].name == "CRAMP"


# ------------------------------------------------------------------------------ switch


def test_the_console_is_on_by_default_only_without_authentication():
    assert Settings(auth_enabled=False).console_active
    assert not Settings(auth_enabled=True).console_active
    assert Settings.from_env({"CDS_CONSOLE": "on"}, auth_enabled=True).console_active
    assert not Settings.from_env({"CDS_CONSOLE": "off"}, auth_enabled=False).console_active
    assert Settings.from_env({}, auth_enabled=False).console_active


def test_a_console_turned_off_answers_404(tmp_path):
    running = start_service(tmp_path, {"CDS_CONSOLE": "off"}, workers=1)
    try:
        for path in (
            "/console",
            "/console/",
            "/console/analytics",
            "/console/rules",
            "/console/analytics.csv",
            "/console/static/console.js",
        ):
            response = get(running, path, allow_redirects=False)
            assert response.status_code == 404, path
        assert post(running, "/console/render", {"service": PV}).status_code == 404
        assert get(running, "/health").status_code == 200
    finally:
        stop(running.process)
