"""Property tests: the chart, the rules and the cards on FHIR data as it really arrives.

EHRs send resources with missing, null, wrong-type and unknown fields, odd units, dates with
and without a time zone, partial dates and garbage strings. Whatever they send:

- building the chart, running the rules and rendering the cards never raises;
- every card rendered conforms to the CDS Hooks response schema;
- a resource that belongs to a concept group (a cramp Condition, a potassium Observation) but
  is malformed where the rules read it is named in the card detail as not interpretable (by its
  name and date, never its resource id), and is not used as evidence;
- unknown fields change nothing: the example patients get the same cards with them;
- a dateTime means the same instant in any time zone, a partial date its first instant, and a
  unit the service knows means the same value however it is spelled.

In process (no HTTP), with "now" pinned where the example patients are dated.
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import load_scenario, scenario_names
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from cds_service import cards, fhirdates, labs, terminology, validation
from cds_service.chart import Chart, build_chart
from cds_service.content import content_dir
from cds_service.gather import Gathered
from cds_service.rules import evaluate_rules

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)  # conftest.EXAMPLE_NOW: the examples' "now"
PID = "p1"
HOOK_INSTANCE = "6f1c3c3e-3d0b-4c55-9f59-0d7c3a52e8a1"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
HOOKS = ("patient-view", "order-select", "order-sign", "dev.crampcds.note-sign")

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- strategies


def _known_codings() -> list[dict]:
    """Every coding the concept groups list: the data most likely to reach a rule."""
    codings = []
    for path in sorted(content_dir("valuesets").glob("*.json")):
        for entry in json.loads(path.read_text("utf-8"))["expansion"]["contains"]:
            codings.append({"system": entry["system"], "code": entry["code"]})
    return codings


KNOWN_CODINGS = _known_codings()
GARBAGE_STRINGS = [
    "",
    " ",
    "null",
    "NaN",
    "-Infinity",
    "2024",
    "2024-05",
    "2024-02-30",
    "2024-13-01",
    "24-05-01",
    "2024-05-01T25:61:00Z",
    "yesterday",
    "R25.2",
    "Patient/p1",
    "final",
    "active",
    "mmol/L",
    "<script>alert(1)</script>",
    "{{context.patientId}}",
    "\x00\x01\x1f",
    "💥 cramp",
    "x" * 3000,
]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(GARBAGE_STRINGS),
    st.lists(st.integers(0, 9) | st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(0, 9) | st.none(), max_size=3),
)
UNKNOWN_NAMES = st.from_regex(r"zz[A-Za-z]{1,8}", fullmatch=True)


def fhir_datetime(moment: datetime, offset_minutes: int, style: str) -> str:
    """`moment` written as FHIR writes it: in a zone, without one (UTC), or as a partial date."""
    local = moment.astimezone(UTC) + timedelta(minutes=offset_minutes)
    if style == "no-zone":
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if style == "date":
        return local.strftime("%Y-%m-%d")
    if style == "month":
        return local.strftime("%Y-%m")
    if style == "year":
        return local.strftime("%Y")
    hours, minutes = divmod(abs(offset_minutes), 60)
    sign = "+" if offset_minutes >= 0 else "-"
    zone = "Z" if offset_minutes == 0 else f"{sign}{hours:02d}:{minutes:02d}"
    return local.strftime("%Y-%m-%dT%H:%M:%S") + zone


OFFSETS = st.sampled_from([0, 60, -300, 330, 345, -600, 840, -720])
MOMENTS = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 6, 1), timezones=st.just(UTC)
)
DATES = st.one_of(
    st.builds(
        fhir_datetime,
        MOMENTS,
        OFFSETS,
        st.sampled_from(["zone", "no-zone", "date", "month", "year"]),
    ),
    JUNK,
)
UNITS = st.one_of(
    st.sampled_from(
        ["mmol/L", "mEq/L", "MMOL/L", "mmol / l", "meq/l", "mg/dL", "%", "Cel", "[degF]", "kg"]
    ),
    st.sampled_from(["mmol/dL", "µmol/L", "g/L", "1", "", "mmol/L ", "??"]),
    JUNK,
)


@st.composite
def messed(draw, value, depth: int = 0):
    """`value`, perhaps broken: a field removed, nulled, of the wrong type or garbage, an
    unknown field added, at any depth (most of the record stays as it was)."""
    action = draw(st.sampled_from(["keep"] * 5 + ["junk"] + ["recurse"] * 4))
    if action == "keep" or depth > 4:
        return value
    if action == "junk":
        return draw(JUNK)
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            fate = draw(st.sampled_from(["keep"] * 5 + ["drop", "null", "mess", "mess"]))
            if key == "resourceType" or fate == "keep":
                result[key] = item
            elif fate == "null":
                result[key] = None
            elif fate == "mess":
                result[key] = draw(messed(item, depth + 1))
        for name in draw(st.lists(UNKNOWN_NAMES, max_size=2)):
            result[name] = draw(JUNK)
        return result
    if isinstance(value, list):
        return [draw(messed(item, depth + 1)) for item in value] + draw(st.lists(JUNK, max_size=1))
    return draw(JUNK)


def concept_of(coding: dict, display: str | None = None) -> dict:
    return {"coding": [{**coding, **({"display": display} if display else {})}]}


@st.composite
def a_condition(draw, rid: str) -> dict:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": concept_of(
            {"system": CLINICAL, "code": draw(st.sampled_from(["active", "resolved"]))}
        ),
        "code": concept_of(draw(st.sampled_from(KNOWN_CODINGS)), draw(st.none() | st.text())),
        "subject": {"reference": f"Patient/{PID}"},
        "onsetDateTime": draw(DATES),
        "bodySite": [concept_of(draw(st.sampled_from(KNOWN_CODINGS)))],
    }


@st.composite
def an_observation(draw, rid: str) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": draw(st.sampled_from(["final", "amended", "preliminary", "cancelled"])),
        "code": concept_of(draw(st.sampled_from(KNOWN_CODINGS))),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": draw(DATES),
        "valueQuantity": {
            "value": draw(st.floats(0, 200, allow_nan=False) | st.integers(0, 200)),
            "unit": draw(UNITS),
            "system": UCUM,
        },
        "interpretation": [
            concept_of({"system": "x", "code": draw(st.sampled_from(["L", "N", "H", "HH"]))})
        ],
        "referenceRange": [
            {"low": {"value": draw(st.floats(0, 10, allow_nan=False)), "unit": draw(UNITS)}}
        ],
    }
    if draw(st.booleans()):
        del resource["valueQuantity"]
        resource["valueCodeableConcept"] = concept_of(draw(st.sampled_from(KNOWN_CODINGS)))
    return resource


@st.composite
def a_medication_request(draw, rid: str) -> dict:
    resource = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": draw(st.sampled_from(["active", "on-hold", "stopped", "draft"])),
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": draw(DATES),
        "medicationCodeableConcept": concept_of(draw(st.sampled_from(KNOWN_CODINGS))),
    }
    if draw(st.booleans()):
        del resource["medicationCodeableConcept"]
        resource["medicationReference"] = {"reference": f"Medication/{rid}-drug"}
    return resource


@st.composite
def a_medication(draw, rid: str) -> dict:
    return {
        "resourceType": "Medication",
        "id": f"{rid}-drug",
        "code": concept_of(draw(st.sampled_from(KNOWN_CODINGS))),
    }


@st.composite
def a_record(draw) -> list[dict]:
    """A patient's resources, each perhaps broken, and usually a cramp Condition that makes the
    rules run."""
    makers = [a_condition, an_observation, a_medication_request, a_medication]
    resources = []
    for index, maker in enumerate(draw(st.lists(st.sampled_from(makers), max_size=12))):
        resources.append(draw(messed(draw(maker(f"r{index}")))))
    if draw(st.sampled_from([True, True, True, False])):
        resources.append(cramp_condition("trigger"))
    patient = {"resourceType": "Patient", "id": PID, "birthDate": "1950-06-01", "gender": "male"}
    resources.append(draw(messed(patient)))
    # What gather lets through: JSON objects with a resourceType.
    kept = [r for r in resources if isinstance(r, dict) and isinstance(r.get("resourceType"), str)]
    return kept


@st.composite
def a_context(draw) -> tuple[str, dict]:
    hook = draw(st.sampled_from(HOOKS))
    context = {"userId": "Practitioner/1", "patientId": PID}
    if hook in {"order-select", "order-sign"}:
        orders = [
            draw(messed(draw(a_medication_request(f"order{i}")) | {"status": "draft"}))
            for i in range(draw(st.integers(0, 3)))
        ]
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "entry": [{"resource": o} for o in orders if isinstance(o, dict)],
        }
        context["selections"] = [f"MedicationRequest/order{i}" for i in range(2)]
    if hook == "dev.crampcds.note-sign":
        context["note"] = draw(
            messed(
                {
                    "resourceType": "DocumentReference",
                    "content": [{"attachment": {"contentType": "text/plain", "data": "Q3JhbXBz"}}],
                }
            )
        )
    return hook, context


def cramp_condition(rid: str, **fields) -> dict:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": concept_of({"system": CLINICAL, "code": "active"}),
        "code": concept_of({"system": ICD10CM, "code": "R25.2"}, "Cramp and spasm"),
        "subject": {"reference": f"Patient/{PID}"},
        "onsetDateTime": "2026-11-15",
        **fields,
    }


def potassium(rid: str, **fields) -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": concept_of({"system": LOINC, "code": "2823-3"}, "Potassium"),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": "2026-11-10T08:00:00Z",
        "valueQuantity": {"value": 3.0, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
        **fields,
    }


# --------------------------------------------------------------------------- the pipeline


def chart_of(resources: list[dict], hook: str = "patient-view", context=None) -> Chart:
    gathered = Gathered()
    gathered.add([copy.deepcopy(r) for r in resources])
    context = context or {"userId": "Practitioner/1", "patientId": PID}
    return build_chart(hook, context, gathered, terminology.load(), NOW)


def cards_for(resources: list[dict], hook: str = "patient-view", context=None) -> list[dict]:
    """The cards, checked against the response schema."""
    chart = chart_of(resources, hook, context)
    findings, trigger = evaluate_rules(chart)
    rendered = cards.render(findings, trigger, chart, HOOK_INSTANCE)
    assert validation.problems("response", {"cards": rendered}) == []
    return rendered


def sections(card: dict) -> tuple[str, str]:
    """The card detail's evidence section and its "could not be read" section."""
    headings = cards.content().common["headings"]
    evidence_heading, unread_heading, sources_heading = (
        f"**{headings[key]}**" for key in ("evidence", "unreadable", "sources")
    )
    detail = card["detail"].split(sources_heading)[0]
    _, _, evidence = detail.partition(evidence_heading)
    _, _, unread = detail.partition(unread_heading)
    return evidence.split(unread_heading)[0], unread


def assert_named_not_used(
    rendered: list[dict], reference: str, names: tuple[str, ...], used_as: tuple[str, ...] = ()
) -> None:
    """On every card, the record is listed under "could not be read" as not interpretable, by
    one of its names (never its resource id), and is not among the findings (`used_as`: how
    it would be listed there)."""
    assert rendered, "no card to carry the detail"
    for card in rendered:
        evidence, unread = sections(card)
        assert reference not in card["detail"], card["detail"]
        assert not any(text in evidence for text in used_as), card["detail"]
        lines = [
            line for line in unread.splitlines() if any(n.lower() in line.lower() for n in names)
        ]
        assert any("not interpretable" in line for line in lines), card["detail"]


def rule_ids(rendered: list[dict]) -> list[str]:
    return [card["source"]["topic"]["code"] for card in rendered]


# --------------------------------------------------------------------------- properties


@given(record=a_record(), hook_context=a_context())
@settings(PROPERTY_SETTINGS, max_examples=300)
def test_any_record_gives_schema_valid_cards_without_raising(record, hook_context):
    hook, context = hook_context
    cards_for(record, hook, context)


NOT_A_NUMBER = JUNK.filter(lambda v: not isinstance(v, int | float) or isinstance(v, bool))
NOT_A_STRING = JUNK.filter(lambda v: not isinstance(v, str) and v is not None)
# Of the wrong JSON type for an element that holds an object or a list of objects. (An object
# whose only fields are unknown is not here: unknown fields are ignored, by design.)
WRONG_TYPE = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers() | st.text(max_size=3), min_size=1, max_size=2),
)
NOT_A_DATE = st.one_of(
    st.sampled_from(["yesterday", "2024-02-30", "2024-13", "24-05-01", "", "2026-11-10T25:00"]),
    NOT_A_STRING,
)
UNKNOWN_UNITS = st.one_of(
    st.sampled_from(["mmol/dL", "g/L", "mg/dL", "1", "??", "mmol", "mol/L"]),
    st.from_regex(r"[a-z]{1,4}/[a-z]{1,3}", fullmatch=True).filter(
        lambda u: labs.POTASSIUM.to_canonical(1.0, u) is None
    ),
)
BROKEN_CODE = st.one_of(
    st.builds(lambda d: {"display": d}, NOT_A_STRING),  # a display of the wrong type
    st.builds(lambda t: {"text": t}, NOT_A_STRING),  # a text of the wrong type
    st.builds(lambda j: {"extra coding": j}, WRONG_TYPE),
)


def broken_code(base: dict, how: dict) -> dict:
    code = copy.deepcopy(base)
    if "display" in how:
        code["coding"][0]["display"] = how["display"]
    if "text" in how:
        code["text"] = how["text"]
    if "extra coding" in how:
        code["coding"].append(how["extra coding"])
    return code


K = potassium("k")["code"]
BROKEN_POTASSIUM = st.one_of(
    st.builds(lambda v: potassium("k", valueQuantity={"value": v, "unit": "mmol/L"}), NOT_A_NUMBER),
    st.builds(lambda u: potassium("k", valueQuantity={"value": 3.0, "unit": u}), UNKNOWN_UNITS),
    st.builds(lambda u: potassium("k", valueQuantity={"value": 3.0, "unit": u}), NOT_A_STRING),
    st.builds(lambda q: potassium("k", valueQuantity=q), WRONG_TYPE),
    st.builds(lambda v: {**potassium("k"), "valueQuantity": None, "valueString": v}, JUNK),
    st.builds(lambda d: potassium("k", effectiveDateTime=d), NOT_A_DATE),
    st.builds(lambda i: potassium("k", interpretation=i), WRONG_TYPE),
    st.builds(lambda r: potassium("k", referenceRange=r), WRONG_TYPE),
    st.builds(lambda r: potassium("k", referenceRange=[{"low": r}]), WRONG_TYPE),
    st.builds(lambda c: potassium("k", category=c), WRONG_TYPE),
    st.builds(lambda s: potassium("k", subject=s), st.sampled_from(["Patient/p1", 7, ["x"]])),
    st.builds(lambda s: potassium("k", subject={"reference": s}), st.integers() | st.booleans()),
    st.builds(lambda how: potassium("k", code=broken_code(K, how)), BROKEN_CODE),
)
C = cramp_condition("c")["code"]
BROKEN_CRAMP = st.one_of(
    st.builds(lambda s: cramp_condition("c-bad", clinicalStatus=s), WRONG_TYPE),
    st.builds(lambda s: cramp_condition("c-bad", verificationStatus=s), WRONG_TYPE),
    st.builds(lambda b: cramp_condition("c-bad", bodySite=b), WRONG_TYPE),
    st.builds(lambda b: cramp_condition("c-bad", bodySite=[b]), WRONG_TYPE),
    st.builds(lambda d: cramp_condition("c-bad", onsetDateTime=d), NOT_A_DATE),
    st.builds(lambda s: cramp_condition("c-bad", subject=s), st.sampled_from(["Patient/p1", 7])),
    st.builds(lambda how: cramp_condition("c-bad", code=broken_code(C, how)), BROKEN_CODE),
)


def without_nulls(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if v is not None}


@given(broken=BROKEN_POTASSIUM.map(without_nulls))
@settings(PROPERTY_SETTINGS, max_examples=120)
def test_a_malformed_potassium_is_named_as_not_interpretable_and_not_used(broken):
    note(repr(broken))
    records = [cramp_condition("trigger"), broken]
    assert chart_of(records).latest_result(labs.POTASSIUM)[0] is None
    rendered = cards_for(records)
    # Not used: had it been read as a result, there would be no "labs missing" card.
    assert "cramp-labs-missing" in rule_ids(rendered)
    # Named by its display, or by the analyte when its display is broken.
    assert_named_not_used(rendered, "Observation/k", ("potassium",), used_as=("Potassium 3",))


@given(broken=BROKEN_CRAMP.map(without_nulls))
@settings(PROPERTY_SETTINGS, max_examples=120)
def test_a_malformed_cramp_condition_is_named_as_not_interpretable_and_not_used(broken):
    note(repr(broken))
    records = [cramp_condition("trigger"), broken]
    chart = chart_of(records)
    # Not used: the trigger's lookback reads only the well-formed one. (One whose only fault
    # is its date still counts where no date is asked, as an undated Condition does.)
    used = chart.conditions_in("CRAMP", within_days=90)
    used += chart.past_conditions_in("CRAMP", within_days=90)
    assert [m.fact.reference for m in used] == ["Condition/trigger"]
    rendered = cards_for(records)
    # Named by its display, or by its code when its display is broken.
    assert_named_not_used(
        rendered, "Condition/c-bad", ("Cramp and spasm", "Condition ICD-10-CM R25.2")
    )


@st.composite
def with_unknown_fields(draw, value, depth: int = 0):
    """`value` with unknown fields (names no FHIR resource uses) added to its objects."""
    if isinstance(value, dict):
        result = {k: draw(with_unknown_fields(v, depth + 1)) for k, v in value.items()}
        if depth < 4:
            for name in draw(st.lists(UNKNOWN_NAMES, max_size=2)):
                result[name] = draw(JUNK)
        return result
    if isinstance(value, list):
        return [draw(with_unknown_fields(item, depth + 1)) for item in value]
    return value


def scenario_inputs(name: str) -> tuple[str, dict, list[dict]]:
    request = load_scenario(name)[0]
    resources = []
    for value in (request.get("prefetch") or {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            resources += [entry["resource"] for entry in value.get("entry") or []]
        elif isinstance(value, dict):
            resources.append(value)
    return request["hook"], request["context"], resources


def scenario_cards(hook: str, context: dict, resources: list[dict]) -> list[dict]:
    chart = build_chart(hook, context, _gathered(resources), terminology.load(), NOW)
    findings, trigger = evaluate_rules(chart)
    rendered = cards.render(findings, trigger, chart, HOOK_INSTANCE)
    assert validation.problems("response", {"cards": rendered}) == []
    return rendered


def _gathered(resources: list[dict]) -> Gathered:
    gathered = Gathered()
    gathered.add(copy.deepcopy(resources))
    return gathered


# In-test patients, one per hook, written as EHRs send them (the example patients under
# fhir_examples/ are checked against their expected cards by the example tests).
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"


def coded_condition(rid: str, system: str, code: str, display: str, onset: str, **fields):
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": concept_of({"system": CLINICAL, "code": "active"}),
        "category": [
            concept_of(
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": "problem-list-item",
                }
            )
        ],
        "code": concept_of({"system": system, "code": code}, display),
        "subject": {"reference": f"Patient/{PID}"},
        "onsetDateTime": onset,
        **fields,
    }


def lab(rid: str, loinc: str, display: str, value: float, unit: str, when: str, **fields):
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [
            concept_of(
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory",
                }
            )
        ],
        "code": concept_of({"system": LOINC, "code": loinc}, display),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **fields,
    }


def drug(rid: str, rxnorm: str, display: str, status: str = "active") -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": "2026-06-01",
        "medicationCodeableConcept": concept_of({"system": RXNORM, "code": rxnorm}, display),
    }


PATIENT = {"resourceType": "Patient", "id": PID, "birthDate": "1950-06-01", "gender": "female"}
CRAMPS_IN_CALF = coded_condition(
    "cramp",
    ICD10CM,
    "R25.2",
    "Cramp and spasm",
    "2026-11-15",
    bodySite=[concept_of({"system": SNOMED, "code": "53840002"}, "Calf of leg")],
)
SCIATICA_RIGHT = coded_condition(
    "sciatica", ICD10CM, "M54.41", "Lumbago with sciatica, right side", "2026-11-01"
)
CONTEXT = {"userId": "Practitioner/1", "patientId": PID}
PATIENT_VIEW = (
    "patient-view",
    CONTEXT,
    [
        PATIENT,
        CRAMPS_IN_CALF,
        SCIATICA_RIGHT,
        coded_condition("tingling", ICD10CM, "R20.2", "Paresthesia of skin", "2026-11-10"),
        lab("k", "2823-3", "Potassium", 3.1, "mmol/L", "2026-11-10T08:00:00Z"),
        lab("egfr", "33914-3", "eGFR", 45, "mL/min/{1.73_m2}", "2026-10-01T08:00:00Z"),
        drug("furosemide", "4603", "furosemide"),
        drug("statin", "83367", "atorvastatin"),
    ],
)
NO_CRAMPS_RETENTION = (
    "patient-view",
    CONTEXT,
    [
        PATIENT,
        SCIATICA_RIGHT,
        coded_condition("retention", SNOMED, "236648008", "Acute retention of urine", "2026-11-19"),
    ],
)
DRAFT_ORDERS = [
    {
        "resourceType": "ServiceRequest",
        "id": "mri",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "code": concept_of({"system": CPT, "code": "72148"}, "MRI lumbar spine without contrast"),
    },
    drug("ibuprofen", "5640", "ibuprofen", status="draft"),
    drug("quinine", "9071", "quinine", status="draft"),
]
ORDER_SIGN = (
    "order-sign",
    {
        **CONTEXT,
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o} for o in DRAFT_ORDERS]},
    },
    [
        PATIENT,
        CRAMPS_IN_CALF,
        SCIATICA_RIGHT,
        lab("k", "2823-3", "Potassium", 3.1, "mmol/L", "2026-11-10"),
    ],
)
NOTE_SIGN = (
    "dev.crampcds.note-sign",
    {
        **CONTEXT,
        "note": {
            "resourceType": "DocumentReference",
            "id": "note",
            "status": "current",
            "content": [
                {
                    "attachment": {
                        "contentType": "text/plain",
                        "data": base64.b64encode(
                            b"Calf cramps at night for two weeks. Sciatica down the right leg."
                        ).decode(),
                    }
                }
            ],
        },
    },
    [PATIENT],
)
# Each patient, and the cards catalog v2 gives it (order hooks: red flags and order checks).
PATIENTS = {
    "patient-view": (
        PATIENT_VIEW,
        [
            "electrolyte-cramp-cause",
            "medication-cramp-cause",
            "comorbidity-cramp-cause",
            "cramp-sciatica-association",
            "sciatica-management",
        ],
    ),
    "no-cramps-retention": (NO_CRAMPS_RETENTION, ["cauda-equina-red-flag"]),
    # The low potassium is not repeated here; the ibuprofen is an info caution at age 76.
    "order-sign": (ORDER_SIGN, ["imaging-stewardship", "quinine-caution", "nsaid-caution"]),
    "note-sign": (
        NOTE_SIGN,
        ["cramp-labs-missing", "cramp-sciatica-association", "sciatica-management"],
    ),
}


@pytest.mark.parametrize("name", sorted(PATIENTS))
def test_the_in_test_patients_get_their_catalog_cards(name):
    (hook, context, resources), rules = PATIENTS[name]
    assert rule_ids(scenario_cards(hook, context, resources)) == rules


@given(name=st.sampled_from(sorted(PATIENTS)), data=st.data())
@settings(PROPERTY_SETTINGS, max_examples=80)
def test_unknown_fields_change_no_card_of_a_patient(name, data):
    (hook, context, resources), _ = PATIENTS[name]
    expected = scenario_cards(hook, context, resources)
    noisy = [data.draw(with_unknown_fields(r)) for r in resources]
    assert scenario_cards(hook, context, noisy) == expected


@given(name=st.sampled_from(scenario_names()), data=st.data())
@settings(PROPERTY_SETTINGS, max_examples=80)
def test_unknown_fields_change_no_card_of_an_example_patient(name, data):
    # Whether these are the example's expected cards is checked over HTTP by test_http_api
    # (the examples are being rewritten for catalog v2); the in-test patients above pin theirs.
    hook, context, resources = scenario_inputs(name)
    expected = scenario_cards(hook, context, resources)
    noisy = [data.draw(with_unknown_fields(r)) for r in resources]
    assert scenario_cards(hook, context, noisy) == expected


@given(moment=MOMENTS, offset=OFFSETS)
def test_a_date_time_means_the_same_instant_in_any_time_zone(moment, offset):
    instant = moment.replace(microsecond=0)
    assert fhirdates.parse(fhir_datetime(instant, offset, "zone")) == instant
    assert fhirdates.parse(fhir_datetime(instant, offset, "no-zone")) == instant


@given(moment=MOMENTS, offset=OFFSETS, style=st.sampled_from(["date", "month", "year"]))
def test_a_partial_date_stands_for_its_first_instant(moment, offset, style):
    text = fhir_datetime(moment, offset, style)
    parts = [int(p) for p in text.split("-")] + [1, 1]
    assert fhirdates.parse(text) == datetime(parts[0], parts[1], parts[2], tzinfo=UTC)


@given(value=DATES)
def test_anything_in_a_date_field_is_a_utc_instant_or_none(value):
    moment = fhirdates.parse(value)
    assert moment is None or moment.utcoffset() == timedelta(0)


@given(
    days_ago=st.integers(0, 85) | st.integers(95, 700),
    hours=st.integers(0, 23),
    offset=OFFSETS,
    style=st.sampled_from(["zone", "no-zone", "date"]),
)
@settings(PROPERTY_SETTINGS, max_examples=60)
def test_a_cramp_counts_by_its_onset_in_any_time_zone(days_ago, hours, offset, style):
    onset = NOW - timedelta(days=days_ago, hours=hours)
    condition = cramp_condition("c", onsetDateTime=fhir_datetime(onset, offset, style))
    rendered = cards_for([condition])
    assert bool(rendered) == (days_ago <= 85), (condition["onsetDateTime"], rule_ids(rendered))


SAME_AS_MMOL_PER_L = ["mmol/L", "mmol/l", "MMOL/L", "mmol / L", "mEq/L", "meq/l", "MEQ/L"]


@given(
    value=st.floats(1.0, 8.0).map(lambda v: round(v, 1)),
    unit=st.sampled_from(SAME_AS_MMOL_PER_L),
    in_code=st.booleans(),
)
@settings(PROPERTY_SETTINGS, max_examples=60)
def test_a_potassium_unit_is_read_however_it_is_spelled(value, unit, in_code):
    quantity = {"value": value, "code" if in_code else "unit": unit}
    chart = chart_of([cramp_condition("trigger"), potassium("k", valueQuantity=quantity)])
    result, unreadable = chart.latest_result(labs.POTASSIUM)
    assert unreadable == [] and result is not None and result.value == value
    rendered = cards_for([cramp_condition("trigger"), potassium("k", valueQuantity=quantity)])
    assert ("electrolyte-cramp-cause" in rule_ids(rendered)) == (value < 3.5)


# --------------------------------------------------------------------------- odd JSON values


@pytest.mark.parametrize(
    "resource",
    [
        {**potassium("k"), "status": ["final"]},
        {
            "resourceType": "MedicationRequest",
            "id": "m",
            "status": {"code": "active"},
            "intent": "order",
            "subject": {"reference": f"Patient/{PID}"},
            "medicationCodeableConcept": {"text": "furosemide"},
        },
    ],
    ids=["Observation-status-array", "MedicationRequest-status-object"],
)
def test_a_status_of_the_wrong_type_does_not_raise(resource):
    cards_for([cramp_condition("trigger"), resource])


@pytest.mark.parametrize(
    "value", [10**400, float("inf"), float("nan")], ids=["integer-beyond-float", "inf", "nan"]
)
def test_a_potassium_beyond_float_range_is_not_interpretable(value):
    # 10**400 is valid JSON but no float; 1e400 parses as inf and a FHIR server's NaN as nan.
    # None is a potassium result, so the labs-missing card must still ask for one.
    broken = potassium("k", valueQuantity={"value": value, "unit": "mmol/L"})
    rendered = cards_for([cramp_condition("trigger"), broken])
    assert "cramp-labs-missing" in rule_ids(rendered)
