"""Every code a suggestion may write into the chart is right (CLINICAL_RULES.md v2, issue 11).

A suggestion's resource (cards/*.yaml, including the shared `resources:` of cards/_common.yaml)
and a problem-list Condition drafted from the note at signing (the `code` and `body_site`
codings of valuesets/note-terms.yaml) land in the patient's record when the clinician accepts
them. Each (system, code) must be in the table below, checked by hand against the code system,
and carry the table's display; ICD-10-CM codes are checked against the official code set.

The table's displays: RxNorm normalized names (SCD names, ingredient names in lower case),
SNOMED CT fully specified names without the semantic tag (body structures: the synonym in use
in the project's value sets), LOINC long common names, CPT long descriptors.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import yaml

from cds_service.terminology import CPT, ICD10CM, LOINC, RXNORM, SNOMED

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import simple_icd_10_cm as icd10cm

ROOT = Path(__file__).resolve().parent.parent
CARDS = ROOT / "cards"
NOTE_TERMS = ROOT / "valuesets" / "note-terms.yaml"
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"

# (system, code) -> official display.
SUGGESTION_CODES: dict[tuple[str, str], str] = {
    # RxNorm: drafts of ibuprofen and naproxen (the catalog's NSAIDs), gastroprotection.
    (RXNORM, "5640"): "ibuprofen",
    (RXNORM, "197805"): "ibuprofen 400 MG Oral Tablet",
    (RXNORM, "197806"): "ibuprofen 600 MG Oral Tablet",
    (RXNORM, "7258"): "naproxen",
    (RXNORM, "7646"): "omeprazole",
    # SNOMED CT: referrals (catalog: ED 306254002 or 183866009; PT; neurosurgery; orthopaedics).
    (SNOMED, "183866009"): "Referral to emergency clinic",
    (SNOMED, "306254002"): "Referral to Accident and Emergency doctor",
    (SNOMED, "308447003"): "Referral to physiotherapist",
    (SNOMED, "308482002"): "Referral to neurosurgeon",
    (SNOMED, "308481009"): "Referral to orthopedic surgeon",
    # SNOMED CT: ServiceRequest categories and the oral route of a draft.
    (SNOMED, "3457005"): "Patient referral",
    (SNOMED, "363679005"): "Imaging",
    (SNOMED, "108252007"): "Laboratory procedure",
    (SNOMED, "26643006"): "Oral route",
    # SNOMED CT: findings a problem-list Condition drafted from the note may carry.
    (SNOMED, "55300003"): "Cramp",
    (SNOMED, "45352006"): "Spasm",
    (SNOMED, "449918009"): "Cramp in lower leg",
    (SNOMED, "23056005"): "Sciatica",
    (SNOMED, "279039007"): "Low back pain",
    (SNOMED, "278860009"): "Chronic low back pain",
    (SNOMED, "44077006"): "Numbness",
    (SNOMED, "91019004"): "Paresthesia",
    (SNOMED, "62507009"): "Pins and needles",
    (SNOMED, "26544005"): "Muscle weakness",
    (SNOMED, "6077001"): "Foot drop",
    (SNOMED, "192970008"): "Cauda equina syndrome",
    (SNOMED, "165232002"): "Urinary incontinence",
    (SNOMED, "267064002"): "Retention of urine",
    (SNOMED, "236648008"): "Acute retention of urine",
    (SNOMED, "5972002"): "Delay when starting to pass urine",
    (SNOMED, "72042002"): "Incontinence of feces",
    (SNOMED, "386661006"): "Fever",
    (SNOMED, "89362005"): "Weight loss",
    (SNOMED, "448765001"): "Unintentional weight loss",
    (SNOMED, "38864007"): "Perineum",
    # LOINC: orders (MRI, BMP, magnesium, ESR, CRP, CBC, blood culture, CK, TSH).
    (LOINC, "30679-5"): "MR Lumbar spine WO contrast",
    (LOINC, "24321-2"): "Basic metabolic 2000 panel - Serum or Plasma",
    (LOINC, "19123-9"): "Magnesium [Mass/volume] in Serum or Plasma",
    (LOINC, "4537-7"): "Erythrocyte sedimentation rate by Westergren method",
    (LOINC, "1988-5"): "C reactive protein [Mass/volume] in Serum or Plasma",
    (LOINC, "58410-2"): "CBC panel - Blood by Automated count",
    (LOINC, "600-7"): "Bacteria identified in Blood by Culture",
    (LOINC, "2157-6"): "Creatine kinase [Enzymatic activity/volume] in Serum or Plasma",
    (LOINC, "3016-3"): "Thyrotropin [Units/volume] in Serum or Plasma",
    # CPT: MRI without and with contrast (infection), lumbar radiograph (fracture risk).
    (CPT, "72158"): (
        "Magnetic resonance (eg, proton) imaging, spinal canal and contents, without contrast "
        "material, followed by contrast material(s) and further sequences; lumbar"
    ),
    (CPT, "72100"): "Radiologic examination, spine, lumbosacral; 2 or 3 views",
    # The category of a problem-list Condition drafted from the note (cds_service/chart.py).
    (CATEGORY, "problem-list-item"): "Problem List Item",
}

# Codes the catalog says a suggestion writes: each must be in the table and used by a card
# (a tuple lists alternatives, any one of which the cards may use).
CATALOG_SUGGESTIONS: list[tuple[tuple[str, str], ...]] = [
    ((LOINC, "30679-5"),),  # MRI lumbar spine w/o contrast
    ((SNOMED, "306254002"), (SNOMED, "183866009")),  # emergency department
    ((SNOMED, "308482002"), (SNOMED, "308481009")),  # spinal surgery
    ((SNOMED, "308447003"),),  # physiotherapy
    ((CPT, "72158"),),  # MRI without and with contrast
    ((CPT, "72100"),),  # lumbar spine radiograph
    ((LOINC, "4537-7"),),  # ESR
    ((LOINC, "1988-5"),),  # CRP
    ((LOINC, "58410-2"),),  # CBC
    ((LOINC, "600-7"),),  # blood cultures
    ((LOINC, "24321-2"),),  # BMP
    ((LOINC, "19123-9"),),  # magnesium
    ((LOINC, "2157-6"),),  # CK
    ((LOINC, "3016-3"),),  # TSH
    ((RXNORM, "197805"), (RXNORM, "197806")),  # ibuprofen
]

CODE_SYSTEMS = {SNOMED, ICD10CM, LOINC, RXNORM, CPT, CATEGORY}


def _codings(node: object, where: str) -> list[tuple[str, dict]]:
    """Every coding (a mapping with `system` and `code`) under `node`, with where it was."""
    found: list[tuple[str, dict]] = []
    if isinstance(node, dict):
        # A coding has a system and a code; a Quantity (value, unit, system, code) does not count.
        if node.get("system") in CODE_SYSTEMS and "code" in node and "value" not in node:
            found.append((where, node))
        for key, value in node.items():
            found += _codings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _codings(value, f"{where}[{i}]")
    return found


def _card_codings() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(CARDS.glob("*.yaml")):
        document = yaml.safe_load(path.read_text("utf-8"))
        found += _codings(document, path.name)
    return found


def _note_codings() -> list[tuple[str, dict]]:
    document = yaml.safe_load(NOTE_TERMS.read_text("utf-8"))
    return _codings(document.get("concepts", {}), NOTE_TERMS.name)


CARD_CODINGS = _card_codings()
NOTE_CODINGS = _note_codings()
ALL_CODINGS = CARD_CODINGS + NOTE_CODINGS


def test_the_cards_have_suggestion_codings_to_check():
    assert len(CARD_CODINGS) >= 20
    assert len(NOTE_CODINGS) >= 10


@pytest.mark.parametrize(("where", "coding"), ALL_CODINGS, ids=[w for w, _ in ALL_CODINGS])
def test_every_suggested_code_is_known_and_carries_its_official_display(where, coding):
    system, code = coding["system"], str(coding["code"])
    display = coding.get("display")
    if system == ICD10CM:
        assert icd10cm.is_valid_item(code), f"{where}: {code} is not an ICD-10-CM code"
        assert display == icd10cm.get_description(code), f"{where}: {code}"
        return
    assert (system, code) in SUGGESTION_CODES, (
        f"{where}: {system}|{code} is not in the checked table; check it against the code "
        "system and add it"
    )
    assert display == SUGGESTION_CODES[(system, code)], f"{where}: {system}|{code}"


@pytest.mark.parametrize("alternatives", CATALOG_SUGGESTIONS, ids=lambda a: a[0][1])
def test_every_suggestion_the_catalog_names_is_in_the_table_and_used_by_a_card(alternatives):
    assert all(key in SUGGESTION_CODES for key in alternatives)
    used = {(c["system"], str(c["code"])) for _, c in CARD_CODINGS}
    assert used & set(alternatives), f"no card suggests any of {alternatives}"


def test_the_ibuprofen_draft_dose_matches_its_tablet():
    common = yaml.safe_load((CARDS / "_common.yaml").read_text("utf-8"))
    drafts = [
        r for r in common["resources"].values() if r.get("resourceType") == "MedicationRequest"
    ]
    ibuprofen = [
        r
        for r in drafts
        if any(
            "ibuprofen" in (c.get("display") or "").lower()
            for c in r["medicationCodeableConcept"]["coding"]
        )
    ]
    assert ibuprofen, "no ibuprofen draft in cards/_common.yaml"
    for draft in ibuprofen:
        coding = draft["medicationCodeableConcept"]["coding"][0]
        strength = re.search(r"(\d+) MG", SUGGESTION_CODES[(RXNORM, str(coding["code"]))])
        assert strength, coding
        for dosage in draft.get("dosageInstruction", []):
            for dose in dosage.get("doseAndRate", []):
                assert dose["doseQuantity"]["value"] == int(strength.group(1))
                assert dose["doseQuantity"]["code"] == "mg"


def test_the_table_agrees_with_the_value_sets():
    # A code both in a value set and in the table has one display everywhere.
    for path in sorted((ROOT / "valuesets").glob("*.json")):
        document = json.loads(path.read_text("utf-8"))
        for entry in document["expansion"]["contains"]:
            key = (entry["system"], entry["code"])
            if key in SUGGESTION_CODES:
                assert entry["display"] == SUGGESTION_CODES[key], (path.name, key)


def test_the_table_holds_icd10cm_codes_nowhere():
    # ICD-10-CM is checked against the official code set, never against a hand-made table.
    assert not [key for key in SUGGESTION_CODES if key[0] == ICD10CM]
