"""The note reader's context step on its own (issue 11 point 6): `notes.context(text, target)`
for any phrase or span, the same step read_note and read_name use, and `cds-service
note-context`, which prints its answer as JSON for an integrator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cds_service import cli, notes
from cds_service.notes import context, read_name, read_note

CLI = Path(sys.executable).parent / "cds-service"
CORPUS = yaml.safe_load((Path(__file__).parent / "notes_corpus.yaml").read_text("utf-8"))


@pytest.mark.parametrize(
    ("text", "target", "status", "trigger", "category"),
    [
        ("Pt denies fever and chills.", "chills", "negated", "denies", "NEGATED"),
        ("History of a fall from a ladder.", "fall", "historical", "History of", "HISTORICAL"),
        ("Return if the rash spreads.", "rash", "hypothetical", "if", "HYPOTHETICAL"),
        ("Her mother has asthma.", "asthma", "family", "mother", "FAMILY"),
        ("Possible gout of the big toe.", "gout", "possible", "Possible", "POSSIBLE"),
        ("Migraine ruled out.", "migraine", "negated", "ruled out", "NEGATED"),
        ("Afebrile.", "afebrile", "negated", "Afebrile", "NEGATED"),  # its own negation
        ("Denies fever but reports a cough.", "cough", "affirmed", None, None),
        ("No improvement in the cough.", "cough", "affirmed", None, None),  # pseudo-negation
        ("No longer denies numbness.", "numbness", "affirmed", None, None),
    ],
)
def test_any_target_gets_a_status_and_the_trigger_that_decided(
    text, target, status, trigger, category
):
    answer = context(text, target)
    assert answer.status == status
    assert text[answer.start : answer.end].lower() == target.lower()
    if trigger is None:
        assert answer.trigger is None
    else:
        assert answer.trigger.phrase == trigger
        assert answer.trigger.category == category
        assert text[answer.trigger.start : answer.trigger.end] == trigger
    assert answer.section is None


def test_a_section_header_decides_and_is_named():
    text = "HPI: knee pain.\nFamily history:\nglaucoma, diabetes\n\nPlan: rest."
    answer = context(text, "glaucoma")
    assert answer.status == "family"
    assert answer.trigger is None
    assert answer.section.header == "Family history"
    assert answer.section.category == "FAMILY"
    assert text[answer.section.start : answer.section.end] == "Family history"
    assert context(text, "knee pain").section is None


def test_the_strongest_category_decides():
    answer = context("No history of gout.", "gout")
    assert answer.status == "negated"
    assert answer.modifiers == ("NEGATED",) or answer.modifiers[0] == "NEGATED"


def test_a_span_target_and_the_first_occurrence_of_a_phrase():
    text = "Cough resolved. New cough today."
    assert context(text, "cough").status == "negated"  # the first, in any case
    second = text.rindex("cough")
    assert context(text, (second, second + 5)).status == "affirmed"
    assert context("Denies  leg\nweakness.", "leg weakness").status == "negated"


@pytest.mark.parametrize(
    "target",
    ["wheeze", "", (5, 3), (0, 999), (5, 7), (0, 11)],
    ids=["absent", "empty", "backwards", "outside", "between-sentences", "two-sentences"],
)
def test_a_target_not_in_one_sentence_of_words_is_an_error(target):
    with pytest.raises(ValueError):
        context("Cough. Cold.", target)


def test_read_note_uses_the_same_step_for_every_corpus_finding():
    for note in CORPUS:
        for finding in read_note(note["text"]):
            answer = context(note["text"], (finding.start, finding.end))
            assert answer.status == finding.status, (note["id"], finding)
            assert answer.modifiers == finding.modifiers, (note["id"], finding)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Numbness of buttock", {("SADDLE_ANAESTHESIA", "affirmed")}),
        ("Retention of urine, unspecified", {("BLADDER_BOWEL", "affirmed")}),
        ("History of basal cell carcinoma of skin", set()),
        ("Squamous cell carcinoma of skin of back", set()),
        ("Personal history of malignant neoplasm of prostate", {("CANCER_HISTORY", "historical")}),
        ("Hx of lumbar radiculopathy", {("SCIATICA", "historical")}),
        ("Denies fever", {("FEVER", "negated")}),
        ("Fever absent", {("FEVER", "negated")}),
        ("No leg weakness", {("LEG_WEAKNESS", "negated")}),
        ("Possible cauda equina syndrome", {("CAUDA_EQUINA", "possible")}),
        ("r/o CES", {("CAUDA_EQUINA", "possible")}),
        ("Family history of multiple myeloma", {("CANCER_HISTORY", "family")}),
        ("Family history of diabetes mellitus", {("DIABETES_NEUROPATHY", "family")}),
        ("Urinary hesitancy", {("BLADDER_BOWEL", "affirmed")}),
        ("Poor urinary stream", {("BLADDER_BOWEL", "affirmed")}),
        ("Incomplete bladder emptying", {("BLADDER_BOWEL", "affirmed")}),
        ("Straining to void", {("BLADDER_BOWEL", "affirmed")}),
        ("Loss of sensation of perineum", {("SADDLE_ANAESTHESIA", "affirmed")}),
        ("Left sided foot drop", {("FOOT_DROP", "affirmed")}),
        ("Hypokalemia", {("ELECTROLYTE_DX", "affirmed")}),
        ("Intravenous drug user", {("INJECTION_DRUG_USE", "affirmed")}),
        ("Kidney transplant recipient", {("IMMUNOSUPPRESSION", "affirmed")}),
        ("Age-related osteoporosis", {("FRACTURE_RISK", "affirmed")}),
        ("Underactive thyroid", {("HYPOTHYROID", "affirmed")}),
        ("Chronic kidney disease stage 3", {("CKD", "affirmed")}),
        ("Pregnant", {("PREGNANCY", "affirmed")}),
        ("Intermittent claudication", {("PAD", "affirmed")}),
        ("Diabetic peripheral neuropathy", {("DIABETES_NEUROPATHY", "affirmed")}),
        ("Congestive heart failure", {("HEART_FAILURE", "affirmed")}),
        ("Duodenal ulcer", {("GI_ULCER_BLEED", "affirmed")}),
        ("Nocturnal leg cramps", {("CRAMP", "affirmed")}),
        ("Lumbago", {("LOW_BACK_PAIN", "affirmed")}),
        ("Pins and needles", {("NERVE_SYMPTOM", "affirmed")}),
        ("Anesthesia of skin", {("NERVE_SYMPTOM", "affirmed")}),
        ("Other intervertebral disc displacement, lumbar region", {("SCIATICA", "affirmed")}),
        ("Personal history of other malignant neoplasm of skin", set()),
        ("Malignant melanoma of skin", {("CANCER_HISTORY", "affirmed")}),
        ("Opioid dependence, uncomplicated", set()),  # F11: injection only when named
        ("Long term (current) use of systemic steroids", {("FRACTURE_RISK", "affirmed")}),
        ("Stress incontinence", {("BLADDER_BOWEL", "historical")}),
    ],
)
def test_a_record_name_is_read_with_its_status(name, expected):
    assert {(f.concept, f.status) for f in read_name(name)} == expected, read_name(name)


def test_a_name_has_no_sections():
    # In a note "Family history" alone on a line heads a section; a name is only a name.
    assert {(f.concept, f.status) for f in read_name("Family: sciatica")} == {
        ("SCIATICA", "affirmed")
    }


def test_read_name_is_bounded():
    assert read_name("numbness " * 100_000)  # read up to MAX_NAME_CHARS, quickly
    assert len(read_name("numbness " * 100_000)) <= notes.MAX_NAME_CHARS


# --- cds-service note-context ----------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60, env=env)


def test_note_context_prints_its_answer_as_json():
    text = "No bladder problems. Denies leg weakness but reports tingling in the left foot."
    result = run("note-context", "--text", text, "--target", "LEG WEAKNESS")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    start = text.index("leg weakness")
    assert answer == {
        "status": "negated",
        "span": [start, start + len("leg weakness")],
        "trigger": {"phrase": "Denies", "category": "NEGATED", "start": 21, "end": 27},
        "section": None,
        "modifiers": ["NEGATED"],
    }


def test_note_context_names_the_section():
    result = run("note-context", "--text", "Red flags:\nsaddle numbness", "--target", "saddle")
    answer = json.loads(result.stdout)
    assert answer["status"] == "hypothetical"
    assert answer["section"]["header"] == "Red flags"
    assert answer["trigger"] is None


def test_note_context_fails_in_one_line_when_the_phrase_is_absent():
    result = run("note-context", "--text", "Cough.", "--target", "fever")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "cds-service: --target: the target phrase is not in the text"


def test_note_context_in_process(capsys):
    code = cli.main(["note-context", "--text", "Mother had sciatica.", "--target", "sciatica"])
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "family"
    assert answer["trigger"]["phrase"] == "Mother"
    assert cli.main(["note-context", "--text", "Cough.", "--target", "x"]) == 2
    assert "not in the text" in capsys.readouterr().err
