"""The value sets in valuesets/ against the official code sets and CLINICAL_RULES.md version 2.

- Every ICD-10-CM code and prefix exists in the official ICD-10-CM code set (the package
  simple-icd-10-cm) and its display is the official description. The description used is the
  one the package gives (`get_description`: the long description of the tabular list); a prefix
  entry's display is the description of the category or subcategory it names.
- Every file parses with `terminology.parse_value_set`; names, ids and urls are unique.
- The catalog's minimum codes ("Concept groups" and "Lab thresholds") are present: one row per
  group below, so dropping a catalog code fails a test.
- An ionized calcium is never a total calcium.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    # The package reads its data with a deprecated importlib.resources call at import.
    warnings.simplefilter("ignore", DeprecationWarning)
    import simple_icd_10_cm as icd10cm

from cds_service import terminology
from cds_service.terminology import CPT, ICD10CM, LOINC, RXNORM, SNOMED

VALUESETS = Path(__file__).resolve().parent.parent / "valuesets"
FILES = sorted(VALUESETS.glob("*.json"))
EXT = "https://crampcds.dev/fhir/StructureDefinition/"
PREFIX, UNVERIFIED, EXCLUDED = EXT + "code-prefix", EXT + "unverified-code", EXT + "excluded-code"
SYSTEMS = {SNOMED, ICD10CM, LOINC, RXNORM, CPT}


def _documents() -> list[tuple[Path, dict]]:
    return [(path, json.loads(path.read_text("utf-8"))) for path in FILES]


def _entries(system: str | None = None) -> list[tuple[str, dict]]:
    return [
        (doc["name"], entry)
        for _, doc in _documents()
        for entry in doc.get("expansion", {}).get("contains", [])
        if system is None or entry["system"] == system
    ]


def _extensions(entry: dict) -> dict[str, dict]:
    return {e["url"]: e for e in entry.get("extension", [])}


@pytest.fixture(scope="module")
def terms() -> terminology.Terminology:
    return terminology.load()


# --- Files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_value_set_file_parses(path):
    document = json.loads(path.read_text("utf-8"))
    value_set = terminology.parse_value_set(document)
    assert value_set.name == document["name"]
    assert value_set.exact or value_set.prefixes or value_set.unverified or value_set.names
    # One group per file, kebab-case file name, the url pattern of the others.
    assert document["id"] == path.stem
    assert document["url"] == f"https://crampcds.dev/fhir/ValueSet/{path.stem}"
    assert document["name"] == path.stem.upper().replace("-", "_")


def test_value_set_names_ids_and_urls_are_unique():
    documents = [doc for _, doc in _documents()]
    for key in ("name", "id", "url"):
        values = [doc[key] for doc in documents]
        assert len(values) == len(set(values)), f"duplicate {key}"


def test_every_entry_has_a_known_system_a_display_and_no_duplicate():
    for _, doc in _documents():
        seen = set()
        for entry in doc.get("expansion", {}).get("contains", []):
            assert entry["system"] in SYSTEMS, (doc["name"], entry)
            assert entry.get("display", "").strip(), (doc["name"], entry["code"])
            key = (entry["system"], terminology.normalise(entry["system"], entry["code"]))
            assert key not in seen, (doc["name"], entry["code"])
            seen.add(key)
            extensions = _extensions(entry)
            if UNVERIFIED in extensions:
                assert extensions[UNVERIFIED]["valueString"].strip()
                # The parser has no unverified prefixes: such an entry would match everything.
                assert PREFIX not in extensions, (doc["name"], entry["code"])
            for flag in (PREFIX, EXCLUDED):
                if flag in extensions:
                    assert extensions[flag]["valueBoolean"] is True


# --- ICD-10-CM against the official code set --------------------------------------------------

ICD_ENTRIES = _entries(ICD10CM)


def _icd_id(param) -> str:
    name, entry = param
    return f"{name}-{entry['code']}"


def test_there_are_icd10cm_entries_to_check():
    assert len(ICD_ENTRIES) > 300


@pytest.mark.parametrize("item", ICD_ENTRIES, ids=[_icd_id(p) for p in ICD_ENTRIES])
def test_icd10cm_code_exists_and_display_is_the_official_description(item):
    name, entry = item
    code = entry["code"]
    assert icd10cm.is_valid_item(code), f"{name}: {code} is not an ICD-10-CM code"
    # Written as the code set writes it, with the dot (M54.31, not M5431).
    assert code == icd10cm.add_dot(icd10cm.remove_dot(code)), f"{name}: write {code} with its dot"
    assert entry["display"] == icd10cm.get_description(code), f"{name}: {code}"


@pytest.mark.parametrize(
    "item",
    [item for item in ICD_ENTRIES if PREFIX in _extensions(item[1])],
    ids=lambda p: _icd_id(p),
)
def test_an_icd10cm_prefix_names_a_category_with_codes_under_it(item):
    name, entry = item
    code = entry["code"]
    assert not icd10cm.is_leaf(code), f"{name}: prefix {code} has no codes under it"


# --- Catalog minimum codes (CLINICAL_RULES.md v2) ---------------------------------------------


def _codes(system: str, codes: str) -> list[tuple[str, ...]]:
    return [(system, code) for code in codes.split()]


def _words(names: str) -> tuple[str, ...]:
    return tuple(names.split())


# One row per concept group: (group, the value sets that implement it, its codes). A code is
# (system, code) or (system, code, display) when it is an unverified (u) code that needs the
# display to name the concept. For a catalog prefix (M54.3*) the prefix and codes under it.
CATALOG: list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]] = [
    (
        "CRAMP",
        ("CRAMP",),
        [(SNOMED, "55300003"), (SNOMED, "45352006"), (ICD10CM, "R25.2")]
        + [(ICD10CM, c) for c in ("M62.83", "M62.830", "M62.831", "M62.838")],
    ),
    (
        "SCIATICA",
        ("SCIATICA",),
        [(SNOMED, "23056005"), (SNOMED, "18347007")]
        + _codes(
            ICD10CM,
            "M54.3 M54.30 M54.31 M54.32 M54.4 M54.40 M54.41 M54.42 M54.16 M54.17 M51.16 M51.17 "
            "M51.26 M51.27 M48.06 M48.061 M48.062 G57.0 G57.00 G57.01 G57.02 G57.03",
        ),
    ),
    (
        "LOW_BACK_PAIN",
        ("LOW_BACK_PAIN",),
        [(SNOMED, "279039007"), (SNOMED, "278860009")]
        + [(ICD10CM, c) for c in ("M54.5", "M54.50", "M54.51", "M54.59")],
    ),
    (
        "SCIATIC_PATH_SITE",
        ("SCIATIC_PATH_SITE", "CALF_CRAMP"),
        [
            (SNOMED, "53840002", "Calf structure"),
            (SNOMED, "61685007", "Lower leg structure"),
            (SNOMED, "56459004"),
            (ICD10CM, "M62.831"),
        ],
    ),
    (
        "NERVE_SYMPTOM",
        ("NERVE_SYMPTOM",),
        [(SNOMED, c) for c in ("44077006", "91019004", "62507009")]
        + [(ICD10CM, c) for c in ("R20.0", "R20.1", "R20.2", "R20.8", "R20.9")],
    ),
    ("LEG_WEAKNESS", ("LEG_WEAKNESS",), [(SNOMED, "26544005"), (ICD10CM, "M62.81")]),
    (
        "CAUDA_EQUINA",
        ("CAUDA_EQUINA",),
        [(SNOMED, "192970008"), (ICD10CM, "G83.4"), (ICD10CM, "G95.81")],
    ),
    (
        "BLADDER_BOWEL",
        ("BLADDER_BOWEL",),
        [(SNOMED, c) for c in ("165232002", "267064002", "236648008", "72042002")]
        + _codes(
            ICD10CM,
            "R32 R33 R33.0 R33.8 R33.9 R39.11 R39.12 R39.14 R39.16 N39.4 N39.41 N39.46 N39.498 "
            "N31.9 R15 R15.0 R15.9",
        ),
    ),
    (
        "SADDLE_ANAESTHESIA",
        ("SADDLE_ANAESTHESIA", "SADDLE_SITE", "SENSORY_LOSS"),
        [
            (ICD10CM, "R20.0", "Saddle anaesthesia"),
            (ICD10CM, "R20.1", "Hypoesthesia of skin, saddle area"),
            (ICD10CM, "R20.2", "Saddle paraesthesia"),
            (SNOMED, "38864007", "Perineum structure"),
            (SNOMED, "46862004", "Buttock structure"),
        ],
    ),
    (
        "BILATERAL_SCIATICA",
        ("BILATERAL_SCIATICA", "SCIATICA_RIGHT", "SCIATICA_LEFT"),
        [(ICD10CM, c) for c in ("G57.03", "M54.31", "M54.41", "M54.32", "M54.42")],
    ),
    (
        "FOOT_DROP",
        ("FOOT_DROP", "FOOT_DROP_RIGHT", "FOOT_DROP_LEFT"),
        [(SNOMED, "6077001", "Foot drop")]
        + [(ICD10CM, c) for c in ("M21.37", "M21.371", "M21.372", "M21.379")],
    ),
    (
        "CANCER_HISTORY",
        ("CANCER_HISTORY",),
        [(SNOMED, "363346000")]
        + _codes(
            ICD10CM,
            "C00.0 C18.9 C34.90 C43.9 C4A.9 C50.911 C61 C79.51 C7A.00 C7B.00 C80.1 C90.00 C96.9 "
            "Z85.3 Z85.46 Z85.820",
        ),
    ),
    (
        "WEIGHT_LOSS",
        ("WEIGHT_LOSS", "BODY_WEIGHT"),
        [(SNOMED, "89362005"), (SNOMED, "448765001"), (ICD10CM, "R63.4")]
        + [(LOINC, "29463-7"), (LOINC, "3141-9")],
    ),
    (
        "FEVER",
        ("FEVER", "BODY_TEMPERATURE"),
        [(SNOMED, "386661006"), (ICD10CM, "R50"), (ICD10CM, "R50.9"), (ICD10CM, "R50.81")]
        + [(LOINC, c) for c in ("8310-5", "8331-1", "8328-7", "8332-9", "8333-7")],
    ),
    (
        "INJECTION_DRUG_USE",
        ("INJECTION_DRUG_USE",),
        [
            (SNOMED, "228388006", "Intravenous drug user"),
            (SNOMED, "5602001", "Opioid abuse, injects heroin"),
            (ICD10CM, "F11.10"),
            (ICD10CM, "F11.20"),
            (ICD10CM, "F11.90"),
            (ICD10CM, "F14.20", "Cocaine dependence, injects"),
            (ICD10CM, "F15.10", "Amphetamine abuse by injection"),
        ],
    ),
    (
        "IMMUNOSUPPRESSION",
        ("IMMUNOSUPPRESSION",),
        [(SNOMED, "234532001"), (SNOMED, "86406008")]
        + _codes(
            ICD10CM,
            "D80.0 D81.9 D82.0 D83.9 D84.9 D84.821 B20 Z21 Z94.0 Z94.81 Z79.52 Z79.6 Z79.60 Z79.69",
        ),
    ),
    (
        "FRACTURE_RISK",
        ("FRACTURE_RISK",),
        [(SNOMED, "64859006")]
        + _codes(
            ICD10CM,
            "M80.08XA M81.0 M81.8 Z79.52 S32.000A S32.009A S22.009A M48.56XA",
        ),
    ),
    (
        "ELECTROLYTE_DX",
        ("ELECTROLYTE_DX",),
        [(ICD10CM, c) for c in ("E87.6", "E87.1", "E83.51", "E83.42", "E86.0", "E86.1", "E86.9")],
    ),
    (
        "HYPOTHYROID",
        ("HYPOTHYROID", "TSH"),
        [(SNOMED, "40930008"), (SNOMED, "83664006")]
        + [(ICD10CM, c) for c in ("E03.9", "E03.8", "E89.0")]
        + [(LOINC, "3016-3"), (LOINC, "11580-8")],
    ),
    (
        "CKD",
        ("CKD", "EGFR"),
        [
            (SNOMED, c)
            for c in ("709044004", "431855005", "433144002", "431857002", "433146000", "46177005")
        ]
        + [(ICD10CM, c) for c in ("N18.1", "N18.30", "N18.4", "N18.6", "N18.9", "Z99.2")]
        + [
            (LOINC, c)
            for c in ("33914-3", "98979-8", "62238-1", "48642-3", "48643-1", "88293-6", "88294-4")
        ],
    ),
    (
        "PREGNANCY",
        ("PREGNANCY", "PREGNANCY_EPISODE", "PREGNANCY_STATUS", "DELIVERY_DATE", "GESTATIONAL_AGE"),
        [(SNOMED, "77386006"), (SNOMED, "72892002")]
        + [(ICD10CM, c) for c in ("Z33.1", "Z34.02", "Z34.90", "Z3A.24", "O09.90", "O09.522")]
        + [(ICD10CM, c) for c in ("O20.0", "O24.419", "O26.891", "O36.80X0", "O48.0")]
        + [(LOINC, "82810-3"), (LOINC, "11778-8"), (LOINC, "11884-4"), (LOINC, "18185-9")],
    ),
    ("PAD", ("PAD",), [(SNOMED, "399957001"), (ICD10CM, "I73.9"), (ICD10CM, "I70.213")]),
    (
        "DIABETES_NEUROPATHY",
        ("DIABETES_NEUROPATHY", "HBA1C"),
        [(SNOMED, "44054006"), (SNOMED, "368581000119106")]
        + [(ICD10CM, c) for c in ("E11.9", "E11.40", "E10.9", "G62.9", "G63")]
        + [(LOINC, "4548-4")],
    ),
    (
        "HEART_FAILURE",
        ("HEART_FAILURE",),
        [(SNOMED, "84114007")]
        + [(ICD10CM, c) for c in ("I50.9", "I50.22", "I11.0", "I13.0", "I13.2")],
    ),
    (
        "GI_ULCER_BLEED",
        ("GI_ULCER_BLEED",),
        [(SNOMED, "397825006", "Gastric ulcer")]
        + [(ICD10CM, c) for c in ("K25.9", "K26.4", "K27.0", "K28.9", "K92.0", "K92.1", "K92.2")],
    ),
    (
        "DIURETIC",
        ("DIURETIC",),
        [(RXNORM, c) for c in ("4603", "5487", "1808", "38413", "2409", "5764", "6916")],
    ),
    ("ACE_ARB", ("ACE_ARB",), [(RXNORM, c) for c in ("29046", "3827", "35296")]),
    (
        "STATIN",
        ("STATIN",),
        [(RXNORM, c) for c in ("83367", "36567", "301542", "42463", "6472")],
    ),
    (
        "NSAID",
        ("NSAID",),
        [(RXNORM, c) for c in ("5640", "7258", "3355", "41493", "140587", "35827")],
    ),
    (
        "NSAID_ALLERGY",
        ("NSAID_ALLERGY",),
        [(RXNORM, c) for c in ("5640", "7258", "3355", "41493", "140587", "35827", "1191")],
    ),
    (
        "ANTICOAGULANT",
        ("ANTICOAGULANT",),
        [(RXNORM, c) for c in ("11289", "1364430", "1114195", "1546356", "1599538")],
    ),
    (
        "ANTIPLATELET",
        ("ANTIPLATELET",),
        [(RXNORM, c) for c in ("1191", "32968", "613391", "1116632")],
    ),
    (
        "SSRI_SNRI",
        ("SSRI_SNRI",),
        [(RXNORM, c) for c in ("36437", "4493", "2556", "321988", "32937", "39786", "72625")],
    ),
    ("ORAL_STEROID", ("ORAL_STEROID",), [(RXNORM, c) for c in ("8640", "8638", "3264", "6902")]),
    ("QUININE", ("QUININE",), [(RXNORM, "9071")]),
    (
        "LUMBAR_IMAGING",
        ("LUMBAR_IMAGING",),
        _codes(
            CPT,
            "72100 72110 72114 72120 72131 72132 72133 72148 72149 72158",
        )
        + [(LOINC, c) for c in ("30679-5", "24968-0", "24967-2", "30678-7")],
    ),
    # Derived groups (NSAID_CONTRAINDICATION, NSAID_CAUTION).
    ("CKD_SEVERE", ("CKD_SEVERE",), [(ICD10CM, c) for c in ("N18.4", "N18.5", "N18.6", "Z99.2")]),
    (
        "CKD_STAGE3",
        ("CKD_STAGE3",),
        [(ICD10CM, c) for c in ("N18.3", "N18.30", "N18.31", "N18.32")],
    ),
    # Lab thresholds.
    ("POTASSIUM", ("POTASSIUM",), [(LOINC, c) for c in ("2823-3", "6298-4", "39789-3")]),
    ("SODIUM", ("SODIUM",), [(LOINC, c) for c in ("2951-2", "2947-0", "39791-9")]),
    ("CALCIUM_TOTAL", ("CALCIUM_TOTAL",), [(LOINC, "17861-6"), (LOINC, "2000-8")]),
    ("CALCIUM_CORRECTED", ("CALCIUM_CORRECTED",), [(LOINC, "29265-6")]),
    ("CALCIUM_IONIZED", ("CALCIUM_IONIZED",), [(LOINC, "1994-3"), (LOINC, "1995-0")]),
    ("MAGNESIUM", ("MAGNESIUM",), [(LOINC, "19123-9"), (LOINC, "2601-3")]),
]

# Names the catalog gives instead of (or besides) codes: matched in text or display.
CATALOG_NAMES: list[tuple[str, tuple[str, ...]]] = [
    (
        "DIURETIC",
        _words(
            "furosemide hydrochlorothiazide bumetanide torsemide chlorthalidone indapamide "
            "metolazone"
        ),
    ),
    (
        "ACE_ARB",
        _words(
            "lisinopril enalapril ramipril perindopril captopril quinapril benazepril fosinopril "
            "trandolapril losartan valsartan irbesartan candesartan olmesartan telmisartan"
        ),
    ),
    (
        "STATIN",
        _words(
            "atorvastatin simvastatin rosuvastatin pravastatin lovastatin pitavastatin fluvastatin"
        ),
    ),
    (
        "NSAID",
        _words(
            "ibuprofen naproxen diclofenac meloxicam celecoxib ketorolac etodolac indomethacin "
            "nabumetone piroxicam ketoprofen"
        ),
    ),
    (
        "NSAID_ALLERGY",
        ("nsaid", "non-steroidal", "ibuprofen", "naproxen", "aspirin", "diclofenac"),
    ),
    (
        "ANTICOAGULANT",
        _words(
            "warfarin apixaban rivaroxaban dabigatran edoxaban heparin enoxaparin dalteparin "
            "fondaparinux"
        ),
    ),
    ("ANTIPLATELET", ("aspirin", "clopidogrel", "prasugrel", "ticagrelor")),
    (
        "SSRI_SNRI",
        _words("sertraline fluoxetine citalopram escitalopram paroxetine venlafaxine duloxetine"),
    ),
    ("ORAL_STEROID", ("prednisone", "prednisolone", "dexamethasone", "methylprednisolone")),
    ("QUININE", ("quinine",)),
    (
        "SADDLE_ANAESTHESIA",
        ("saddle anaesthesia", "saddle numbness", "perineal numbness", "numb bum", "numb groin"),
    ),
    ("POST_VOID_RESIDUAL", ("post-void residual", "post void residual")),
]


def _concept(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return {"coding": [coding]}


def _catalog_params():
    for group, sets, codes in CATALOG:
        for system, code, *display in codes:
            yield pytest.param(
                sets, system, code, display[0] if display else None, id=f"{group}-{code}"
            )


def test_every_catalog_group_has_a_row():
    groups = [row[0] for row in CATALOG]
    assert len(groups) == len(set(groups))
    assert len(groups) >= 40


@pytest.mark.parametrize(("sets", "system", "code", "display"), list(_catalog_params()))
def test_catalog_minimum_code_is_in_its_group(terms, sets, system, code, display):
    found = [name for name in sets if terms[name].match(_concept(system, code, display))]
    assert found, f"{system}|{code} is in none of {sets}"


@pytest.mark.parametrize(
    ("group", "name"), [(group, name) for group, names in CATALOG_NAMES for name in names]
)
def test_catalog_name_is_matched_in_text(terms, group, name):
    assert terms[group].match_name({"text": f"{name.capitalize()} (as written)"}) is not None


def test_aspirin_is_not_an_nsaid_by_code_or_name(terms):
    # Aspirin counts as an NSAID only at analgesic doses: the code decides, not the value set.
    aspirin = {"coding": [{"system": RXNORM, "code": "1191", "display": "aspirin"}]}
    aspirin["text"] = "Aspirin 81 MG Oral Tablet"
    assert terms["NSAID"].identify(aspirin) is None
    assert terms["ANTIPLATELET"].identify(aspirin) is not None


def test_an_unverified_code_needs_its_word(terms):
    bare = _concept(ICD10CM, "F14.20", "Cocaine dependence, uncomplicated")
    assert terms["INJECTION_DRUG_USE"].match(bare) is None
    saddle = terms["SADDLE_ANAESTHESIA"]
    assert saddle.match(_concept(ICD10CM, "R20.0", "Anesthesia of skin")) is None
    assert saddle.match(_concept(ICD10CM, "R20.0", "Anesthesia of skin, saddle area")) is not None


def test_an_ionized_calcium_is_never_a_total_calcium(terms):
    total, ionized = terms["CALCIUM_TOTAL"], terms["CALCIUM_IONIZED"]
    assert not total.keys & ionized.keys
    assert not total.prefixes and not ionized.prefixes
    for _, code in ionized.keys:
        assert total.match(_concept(LOINC, code)) is None
    assert not total.names, "a name would read 'ionized calcium' as a total calcium"


# --- Exclusions ---------------------------------------------------------------------------------

# (value set, system, code) entries that must be excluded-code entries: non-melanoma skin
# cancer is not a cancer flag, and childbirth or puerperium codes are not a pregnancy.
MUST_BE_EXCLUDED = [
    ("CANCER_HISTORY", ICD10CM, "C44"),
    ("CANCER_HISTORY", ICD10CM, "Z85.828"),
    ("CANCER_HISTORY", SNOMED, "254701007"),
    ("CANCER_HISTORY", SNOMED, "254651007"),
    ("PREGNANCY_EPISODE", ICD10CM, "O24.43"),
    ("PREGNANCY_EPISODE", ICD10CM, "O24.42"),
]


@pytest.mark.parametrize(("name", "system", "code"), MUST_BE_EXCLUDED)
def test_excluded_concepts_are_excluded_code_entries(name, system, code):
    entries = [
        entry for vs_name, entry in _entries(system) if vs_name == name and entry["code"] == code
    ]
    assert len(entries) == 1
    assert EXCLUDED in _extensions(entries[0])


def test_no_entry_of_another_group_is_excluded_by_mistake():
    # excluded-code is used only where the catalog excludes something.
    groups = {name for name, entry in _entries() if EXCLUDED in _extensions(entry)}
    assert groups == {"CANCER_HISTORY", "PREGNANCY_EPISODE"}
    # R20.* entries are never excluded (the saddle area is decided by text or bodySite).
    assert not [
        entry
        for _, entry in _entries(ICD10CM)
        if entry["code"].startswith("R20") and EXCLUDED in _extensions(entry)
    ]


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD10CM, "C44.91", "Basal cell carcinoma of skin, unspecified"),
        (ICD10CM, "C44.311", "Basal cell carcinoma of skin of nose"),
        (ICD10CM, "C4491", None),
        (ICD10CM, "Z85.828", "Personal history of other malignant neoplasm of skin"),
        (SNOMED, "254701007", "Basal cell carcinoma of skin"),
        (SNOMED, "254651007", "Squamous cell carcinoma of skin"),
    ],
)
def test_non_melanoma_skin_cancer_is_not_a_cancer_flag(terms, system, code, display):
    assert terms["CANCER_HISTORY"].match(_concept(system, code, display)) is None


@pytest.mark.parametrize(
    "code", ["C43.9", "C4A.9", "C50.911", "C61", "C79.51", "Z85.820", "Z85.3", "Z85.46"]
)
def test_melanoma_and_other_cancers_still_count(terms, code):
    assert terms["CANCER_HISTORY"].match(_concept(ICD10CM, code)) is not None


@pytest.mark.parametrize(
    ("code", "counts"),
    [
        ("O24.419", True),  # gestational diabetes in pregnancy
        ("O26.891", True),
        ("O48.0", True),
        ("O24.420", False),  # gestational diabetes in childbirth
        ("O24.439", False),  # ... in the puerperium
        ("O24.03", False),
        ("O26.63", False),
        ("O60.14X0", False),  # preterm labor with delivery: outside O20-O48
        ("O80", False),
    ],
)
def test_pregnancy_episode_codes_exclude_childbirth_and_puerperium(terms, code, counts):
    assert (terms["PREGNANCY_EPISODE"].match(_concept(ICD10CM, code)) is not None) is counts


@pytest.mark.parametrize(
    ("group", "text", "expected"),
    [
        ("NSAID_ALLERGY", "NSAIDs", True),
        ("NSAID_ALLERGY", "Non-steroidal anti-inflammatory drugs", True),
        ("NSAID_ALLERGY", "Aspirin", True),
        ("NSAID_ALLERGY", "Paracetamol", False),
        ("ACE_ARB", "Moexipril 7.5 MG Oral Tablet", True),
        ("ACE_ARB", "Entresto (sacubitril and valsartan)", True),
        ("ACE_ARB", "Amlodipine 5 MG Oral Tablet", False),
        ("SCIATIC_PATH_SITE", "Both calves", True),
        ("SCIATIC_PATH_SITE", "Back of the thigh", True),
        ("SADDLE_SITE", "Genitalia", True),
        ("ANTICOAGULANT", "Heparin sodium 5000 UNT/ML Injectable Solution", True),
        ("LUMBAR_IMAGING", "MRI lumbar spine without contrast", True),
        ("LUMBAR_IMAGING", "XR L-spine 2 views", True),
        ("LUMBAR_IMAGING", "CT head without contrast", False),
        ("POST_VOID_RESIDUAL", "Post-void residual volume (bladder scan)", True),
    ],
)
def test_names_match_as_written_in_real_records(terms, group, text, expected):
    assert (terms[group].match_name({"text": text}) is not None) is expected


DRUG_SETS = _words(
    "DIURETIC ACE_ARB STATIN NSAID ANTICOAGULANT ANTIPLATELET SSRI_SNRI ORAL_STEROID QUININE"
)


@pytest.mark.parametrize("name", DRUG_SETS)
def test_every_rxnorm_ingredient_of_a_drug_set_is_also_matched_by_name(terms, name):
    # Medications often arrive with a product code (SCD/SBD) the set does not list: the name
    # fallback must then find the ingredient in the product's display.
    document = next(doc for _, doc in _documents() if doc["name"] == name)
    for entry in document["expansion"]["contains"]:
        if entry["system"] != RXNORM:
            continue
        product = {"text": f"{entry['display']} 10 MG Oral Tablet"}
        assert terms[name].match_name(product) is not None, entry["display"]
