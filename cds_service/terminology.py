"""Concept groups (value sets) loaded once from `valuesets/` into fast (system, code) lookups.

Each file is a FHIR ValueSet with an expansion. Two project extensions mark catalog conventions:
- `code-prefix`: the entry matches every code that starts with it (ICD-10-CM `M54.3*`);
- `unverified-code`: the code counts only when the coding's display, or the concept's text,
  also names the concept (the extension's valueString is the word to look for);
- `name-match` (on the ValueSet): a name matched, case-insensitively, in the concept's text or
  a coding's display when no code matches (drug ingredient names, body sites).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

from .content import content_dir

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
EXT_BASE = "https://crampcds.dev/fhir/StructureDefinition/"
PREFIX_EXT = EXT_BASE + "code-prefix"
UNVERIFIED_EXT = EXT_BASE + "unverified-code"
NAME_EXT = EXT_BASE + "name-match"


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str = ""


def normalise(system: str, code: str) -> str:
    """ICD-10-CM codes match with and without the dot, in any case."""
    code = code.strip()
    return code.replace(".", "").upper() if system == ICD10CM else code


def codings_of(concept: object) -> Iterator[Coding]:
    """The codings of a CodeableConcept, skipping malformed ones."""
    if not isinstance(concept, dict):
        return
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str) and code:
                display = coding.get("display")
                yield Coding(system, code, display if isinstance(display, str) else "")


def concept_text(concept: object) -> str:
    if not isinstance(concept, dict):
        return ""
    text = concept.get("text")
    return text if isinstance(text, str) else ""


@dataclass(frozen=True)
class ValueSet:
    name: str
    title: str
    url: str
    exact: frozenset[tuple[str, str]]
    prefixes: tuple[tuple[str, str], ...]
    unverified: dict[tuple[str, str], str]  # (system, code) -> word that must be named
    names: tuple[str, ...] = ()

    def match(self, concept: object) -> Coding | None:
        """The first coding of `concept` that is in this value set, or None."""
        text = concept_text(concept).lower()
        for coding in codings_of(concept):
            key = (coding.system, normalise(coding.system, coding.code))
            if key in self.exact:
                return coding
            word = self.unverified.get(key)
            if word is not None:
                if word in coding.display.lower() or word in text:
                    return coding
                continue
            if any(key[0] == s and key[1].startswith(p) for s, p in self.prefixes):
                return coding
        return None

    @property
    def keys(self) -> frozenset[tuple[str, str]]:
        """The (system, normalised code) pairs listed one by one (not the prefixes)."""
        return self.exact | self.unverified.keys()

    def could_match(self, key: tuple[str, str]) -> bool:
        """Whether a coding with this (system, normalised code) may be in the value set (an
        unverified code still needs its display checked by `match`)."""
        if key in self.exact or key in self.unverified:
            return True
        return any(key[0] == s and key[1].startswith(p) for s, p in self.prefixes)

    def match_name(self, concept: object) -> str | None:
        """The first of this value set's names found in the concept's text or displays."""
        if not self.names:
            return None
        texts = [concept_text(concept).lower()]
        texts += [coding.display.lower() for coding in codings_of(concept)]
        for name in self.names:
            if any(name in text for text in texts):
                return name
        return None

    def identify(self, concept: object) -> str | None:
        """How the concept is in this value set: `system|code`, or `name 'x'`; else None."""
        coding = self.match(concept)
        if coding is not None:
            return f"{coding.system}|{coding.code}"
        name = self.match_name(concept)
        return f"name '{name}'" if name is not None else None

    def codes(self, system: str) -> frozenset[str]:
        return frozenset(code for s, code in self.exact if s == system)


@dataclass(frozen=True)
class Terminology:
    value_sets: dict[str, ValueSet]

    def __getitem__(self, name: str) -> ValueSet:
        return self.value_sets[name]


def parse_value_set(document: dict) -> ValueSet:
    exact, prefixes, unverified = set(), [], {}
    for entry in document.get("expansion", {}).get("contains", []):
        system, code = entry["system"], normalise(entry["system"], entry["code"])
        extensions = {e["url"]: e for e in entry.get("extension", [])}
        if PREFIX_EXT in extensions:
            prefixes.append((system, code))
        elif UNVERIFIED_EXT in extensions:
            unverified[(system, code)] = extensions[UNVERIFIED_EXT]["valueString"].lower()
        else:
            exact.add((system, code))
    return ValueSet(
        name=document["name"],
        title=document.get("title", document["name"]),
        url=document["url"],
        exact=frozenset(exact),
        prefixes=tuple(prefixes),
        unverified=unverified,
        names=tuple(
            e["valueString"].lower() for e in document.get("extension", []) if e["url"] == NAME_EXT
        ),
    )


def _documents() -> Iterable[dict]:
    for path in sorted(content_dir("valuesets").glob("*.json")):
        yield json.loads(path.read_text("utf-8"))


@cache
def load() -> Terminology:
    sets = (parse_value_set(doc) for doc in _documents())
    return Terminology({vs.name: vs for vs in sets})
