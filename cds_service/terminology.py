"""Concept groups (value sets) loaded once from `valuesets/` into fast (system, code) lookups.

Each file is a FHIR ValueSet with an expansion. Two project extensions mark catalog conventions:
- `code-prefix`: the entry matches every code that starts with it (ICD-10-CM `M54.3*`);
- `unverified-code`: the code counts only when the coding's display, or the concept's text,
  also names the concept (the extension's valueString is the word to look for);
- `excluded-code` (alone or with `code-prefix`): a coding matching the entry is not in the group
  even when another entry matches (CANCER_HISTORY excludes non-melanoma skin cancer, C44.*);
- `name-match` (on the ValueSet): a name matched, case-insensitively, in the concept's text or
  a coding's display when no code matches (drug ingredient names, body sites).

`Terminology.classify` answers, for one CodeableConcept, every group it belongs to in one pass
over its codings: the chart classifies each record once and rules never walk codes.
"""

from __future__ import annotations

import json
import re
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
EXCLUDED_EXT = EXT_BASE + "excluded-code"
SYSTEM_LABELS = {
    SNOMED: "SNOMED CT",
    ICD10CM: "ICD-10-CM",
    LOINC: "LOINC",
    RXNORM: "RxNorm",
    CPT: "CPT",
}


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str = ""


def normalise(system: str, code: str) -> str:
    """ICD-10-CM codes match with and without the dot, in any case."""
    code = code.strip()
    return code.replace(".", "").upper() if system == ICD10CM else code


def coding_list(concept: object) -> list:
    """A CodeableConcept's `coding` array as sent, or [] when the concept or the array is not
    one (a number, a string, an object: not FHIR, so nothing in it is read)."""
    if not isinstance(concept, dict):
        return []
    codings = concept.get("coding")
    return codings if isinstance(codings, list) else []


def codings_of(concept: object) -> Iterator[Coding]:
    """The codings of a CodeableConcept, skipping malformed ones."""
    for coding in coding_list(concept):
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


_NOT_WORD = re.compile(r"[^\w]+|_+")


def _words(text: str) -> tuple[str, ...]:
    """The text's words in lower case (letters and digits; anything else separates)."""
    return tuple(w for w in _NOT_WORD.split(text.lower()) if w)


def _names(name: str, words: tuple[str, ...]) -> bool:
    """Whether the words contain the name (several words in a row), or, for `-suffix`, a word
    ending with it."""
    if name.startswith("-"):
        return any(w.endswith(name[1:]) and len(w) > len(name) for w in words)
    wanted = _words(name)
    n = len(wanted)
    return any(words[i : i + n] == wanted for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class ValueSet:
    name: str
    title: str
    url: str
    exact: frozenset[tuple[str, str]]
    prefixes: tuple[tuple[str, str], ...]
    unverified: dict[tuple[str, str], str]  # (system, code) -> word that must be named
    names: tuple[str, ...] = ()
    excluded: frozenset[tuple[str, str]] = frozenset()
    excluded_prefixes: tuple[tuple[str, str], ...] = ()

    def excludes(self, key: tuple[str, str]) -> bool:
        return key in self.excluded or any(
            key[0] == s and key[1].startswith(p) for s, p in self.excluded_prefixes
        )

    def match(self, concept: object) -> Coding | None:
        """The first coding of `concept` that is in this value set, or None."""
        text = concept_text(concept).lower()
        for coding in codings_of(concept):
            key = (coding.system, normalise(coding.system, coding.code))
            if (self.excluded or self.excluded_prefixes) and self.excludes(key):
                continue
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
        """The first of this value set's names found, as whole words, in the concept's text or
        displays (case-insensitive); a name written `-pril` matches any word ending so."""
        if not self.names:
            return None
        texts = [concept_text(concept)] + [coding.display for coding in codings_of(concept)]
        words = [_words(text) for text in texts if text]
        for name in self.names:
            if any(_names(name, w) for w in words):
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
class Hit:
    """How a concept is in a group: the coding that matched, or None when a name did."""

    group: str
    coding: Coding | None


class Terminology:
    """Every value set, and a reverse index from (system, code) and code prefixes to groups."""

    def __init__(self, value_sets: dict[str, ValueSet]):
        self.value_sets = value_sets
        self._exact: dict[tuple[str, str], list[str]] = {}
        self._prefix: dict[tuple[str, str], list[str]] = {}
        self._unverified: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._prefix_lengths: dict[str, set[int]] = {}
        for name, vs in value_sets.items():
            for key in vs.exact:
                self._exact.setdefault(key, []).append(name)
            for key in vs.prefixes:
                self._prefix.setdefault(key, []).append(name)
                self._prefix_lengths.setdefault(key[0], set()).add(len(key[1]))
            for key, word in vs.unverified.items():
                self._unverified.setdefault(key, []).append((name, word))
        # Names by their first word, and `-suffix` names: a concept's words are looked up
        # once each, whatever the number of names (drug and class names of every group).
        self._names_by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self._suffixes: list[tuple[str, str]] = []
        for name, vs in value_sets.items():
            for entry in vs.names:
                if entry.startswith("-"):
                    self._suffixes.append((entry[1:], name))
                elif words := _words(entry):
                    self._names_by_first.setdefault(words[0], []).append((words, name))

    def __getitem__(self, name: str) -> ValueSet:
        return self.value_sets[name]

    def groups_of_key(self, key: tuple[str, str], words: str) -> list[str]:
        """The groups one coding belongs to; `words` is its display and the concept's text, in
        lower case, for the codes that count only when the name says so."""
        found = list(self._exact.get(key, ()))
        for length in self._prefix_lengths.get(key[0], ()):
            if length <= len(key[1]):
                found += self._prefix.get((key[0], key[1][:length]), ())
        for group, word in self._unverified.get(key, ()):
            if word in words:
                found.append(group)
        if found:
            found = [g for g in found if not self.value_sets[g].excludes(key)]
        return found

    def classify(self, concept: object) -> dict[str, Hit]:
        """Every group the concept is coded in, each with its first matching coding."""
        hits: dict[str, Hit] = {}
        text = concept_text(concept).lower()
        for coding in codings_of(concept):
            key = (coding.system, normalise(coding.system, coding.code))
            for group in self.groups_of_key(key, f"{coding.display.lower()}\n{text}"):
                hits.setdefault(group, Hit(group, coding))
        return hits

    def knows(self, concept: object) -> bool:
        """Whether any coding of the concept is in any value set (else its name is read)."""
        text = concept_text(concept).lower()
        return any(
            self.groups_of_key(
                (c.system, normalise(c.system, c.code)), f"{c.display.lower()}\n{text}"
            )
            for c in codings_of(concept)
        )

    def named(self, concept: object) -> dict[str, Hit]:
        """Groups whose names (drug ingredients, classes) the concept's text or displays name,
        as whole words (as `ValueSet.match_name` would answer, for every group at once)."""
        found: dict[str, Hit] = {}
        texts = [concept_text(concept)] + [coding.display for coding in codings_of(concept)]
        for text in texts:
            words = _words(text) if text else ()
            for i, word in enumerate(words):
                for wanted, group in self._names_by_first.get(word, ()):
                    if group not in found and words[i : i + len(wanted)] == wanted:
                        found[group] = Hit(group, None)
                for suffix, group in self._suffixes:
                    if group not in found and word.endswith(suffix) and len(word) > len(suffix) + 1:
                        found[group] = Hit(group, None)
        return found


def parse_value_set(document: dict) -> ValueSet:
    exact, prefixes, unverified = set(), [], {}
    excluded, excluded_prefixes = set(), []
    for entry in document.get("expansion", {}).get("contains", []):
        system, code = entry["system"], normalise(entry["system"], entry["code"])
        extensions = {e["url"]: e for e in entry.get("extension", [])}
        if EXCLUDED_EXT in extensions:
            if PREFIX_EXT in extensions:
                excluded_prefixes.append((system, code))
            else:
                excluded.add((system, code))
        elif PREFIX_EXT in extensions:
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
        excluded=frozenset(excluded),
        excluded_prefixes=tuple(excluded_prefixes),
    )


def _documents() -> Iterable[dict]:
    for path in sorted(content_dir("valuesets").glob("*.json")):
        yield json.loads(path.read_text("utf-8"))


@cache
def load() -> Terminology:
    sets = (parse_value_set(doc) for doc in _documents())
    return Terminology({vs.name: vs for vs in sets})
