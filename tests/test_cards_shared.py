"""A card's fixed parts are shared: every card of a rule, in every response, holds the same
`source`, `overrideReasons` and `links` objects, and the same parts of its suggestions'
resources (all but the dicts on the way to the patient's reference). That is safe only as long
as nothing changes a response once it is rendered: these tests run the responses through every
consumer (the engine's schema check, the HTTP view with its quiet filtering and audit, the
CLI's readable form, the quiet logic) and find the prepared content unchanged.
"""

from __future__ import annotations

import copy
import json

from conftest import EXAMPLES, scenario_names

from cds_service import cards, fhirdates
from cds_service.app import create_app
from cds_service.cli import readable
from cds_service.engine import Engine
from cds_service.quiet import Quieting, evidence_fingerprint
from cds_service.services import SERVICES
from cds_service.settings import Settings

NOW = fhirdates.parse("2026-11-20T12:00:00Z")
TYPICAL = "mixed-three-causes"


def _prepared() -> dict:
    """Every shared part of every rule's prepared card text, as plain values."""
    cards.prepare()
    shared = {}
    for rule_id in cards.content().cards:
        text = cards._card_text(rule_id)
        shared[rule_id] = {
            "source": text.source,
            "overrideReasons": text.override_reasons,
            "links": text.links,
            "resources": [
                [action.resource for action in suggestion.actions]
                for suggestion in text.suggestions
            ],
        }
    return shared


def _request(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.request.json").read_text())


def _service(hook: str):
    return next(s for s in SERVICES if s.hook == hook)


def test_cards_of_a_rule_hold_its_prepared_parts():
    engine = Engine(Settings(fixed_now=NOW))
    request = _request(TYPICAL)
    first = engine.evaluate(_service(request["hook"]), copy.deepcopy(request)).response
    second = engine.evaluate(_service(request["hook"]), copy.deepcopy(request)).response
    assert first == second and first["cards"]
    for one, other in zip(first["cards"], second["cards"], strict=True):
        text = cards._card_text(one["source"]["topic"]["code"])
        assert one["source"] is other["source"] is text.source
        assert one["overrideReasons"] is other["overrideReasons"] is text.override_reasons
        assert one.get("links") is other.get("links") is text.links


def test_suggestion_resources_name_their_own_patient_and_leave_the_template_as_it_was():
    engine = Engine(Settings(fixed_now=NOW))
    request = _request(TYPICAL)
    before = copy.deepcopy(_prepared())
    response = engine.evaluate(_service(request["hook"]), request).response
    resources = [
        action["resource"]
        for card in response["cards"]
        for suggestion in card.get("suggestions", [])
        for action in suggestion["actions"]
        if "resource" in action
    ]
    patient = f"Patient/{request['context']['patientId']}"
    assert resources and all(r["subject"] == {"reference": patient} for r in resources)
    assert "{patient}" not in json.dumps(response)
    assert _prepared() == before  # the templates still say {patient}
    assert "{patient}" in json.dumps(before)


def test_no_consumer_changes_a_rendered_response(tmp_path):
    """Every scenario through the HTTP view (quiet filtering, audit, the JSON answer) with the
    engine checking its responses against the schema, then the CLI's readable form and the
    quiet logic over the engine's own response: the shared content is as it was."""
    before = copy.deepcopy(_prepared())
    settings = Settings(
        data_dir=tmp_path,
        auth_enabled=False,
        log_level="WARNING",
        fixed_now=NOW,
        validate_responses=True,
    )
    app = create_app(settings)
    client = app.test_client()
    answers = []
    for name in scenario_names():
        request = _request(name)
        service = _service(request["hook"])
        answer = client.post(f"/cds-services/{service.id}", json=request)
        assert answer.status_code == 200, name
        answers.append(answer.get_json())
        outcome = app.extensions["cds_engine"].evaluate(service, request)
        readable(outcome.response, request["context"]["patientId"])
        quieting = Quieting(app.extensions["cds_quiet"].store, lambda text: text)
        quieting.apply("patient", outcome.response["cards"], outcome.evidence, NOW.date())
    assert any(answer["cards"] for answer in answers)
    assert _prepared() == before


def test_the_fingerprint_does_not_depend_on_rendering():
    """The evidence fingerprint is worked out from the finding alone, before or after its card."""
    from cds_service.chart import build_chart
    from cds_service.gather import gather
    from cds_service.rules import evaluate_rules
    from cds_service.tolerant import tolerate

    engine = Engine(Settings(fixed_now=NOW))
    request = _request(TYPICAL)
    service = _service(request["hook"])
    tolerate(request, service.prefetch)
    gathered = gather(service, request, engine.client, 2.0, None)
    chart = build_chart(service.hook, request["context"], gathered, engine.terminology, NOW)
    findings, trigger = evaluate_rules(chart)
    before = [evidence_fingerprint(f) for f in findings]
    cards.render(findings, trigger, chart, request["hookInstance"])
    assert [evidence_fingerprint(f) for f in findings] == before


def test_the_patient_goes_wherever_a_template_quotes_it_as_the_json_text_replace_did():
    """_with_patient against what cards did before: the template's JSON text with the quoted
    `"{patient}"` replaced by the reference as JSON, read back."""
    template = {
        "resourceType": "ServiceRequest",
        "subject": {"reference": "{patient}"},
        "performer": [{"display": "lab"}, {"reference": "{patient}"}],
        "note": [{"text": "for {patient}"}],  # inside a longer text: not the patient
        "code": {"coding": [{"code": "1"}], "text": "x"},
        "count": 2,
    }
    action = cards._prepare_action({"type": "create", "description": "d", "resource": template})
    for reference in ("Patient/p1", 'Patient/"quoted"', "Patient/\u00e9\ud800"):
        filled = cards._with_patient(action.resource, action.patient_paths, reference)
        text = json.dumps(template).replace('"{patient}"', json.dumps(reference))
        assert filled == json.loads(text)
        assert filled["code"] is action.resource["code"]  # what holds no patient is shared
    assert action.resource == template  # the prepared template is left as it was
