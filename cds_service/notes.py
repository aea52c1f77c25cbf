"""Reads the draft note at note signing: the symptoms it mentions and whether each is current.

A small NegEx/ConText-style reader (Chapman et al. 2001; Harkema et al. 2009). The note is cut
into sentences; section headers ("Family history:", "Return precautions:") give their section a
status; concept patterns find the catalog's symptoms; context triggers ("denies", "history of",
"if", "mother has", "possible") give the mentions in their scope a status, up to a terminator
("but", "however"). Every term, trigger and header is data, in `valuesets/note-terms.yaml`.

Three entry points share one context step (`_Scope.decide`): `read_note` (a draft note),
`read_name` (a coded record's name, the catalog's text fallback: no sections) and `context`
(any phrase or span: its status and the trigger or section header that decided it, which
`cds-service note-context` prints).

Why not medspaCy or negspacy: medspaCy ships for Python 3.11 only as an sdist pinned to
spaCy < 3.8 and to an exact QuickUMLS build with C extensions; negspacy needs spaCy 3.8 (about
300 MB installed with numpy, thinc and pydantic, over a second to import per worker) and covers
negation only, not historical, hypothetical or family mentions, nor note sections.

Nothing here logs: note text never reaches a log. Cards quote at most QUOTE_LIMIT characters.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path

import yaml

from .content import content_dir

QUOTE_LIMIT = 120
MAX_NOTE_CHARS = 100_000  # a note is read whole up to here; past it, see read_note
# Past MAX_NOTE_CHARS the reader reads only the paragraphs (or, in a long paragraph, the lines)
# that contain a word some term can start with, at most this many characters of them; past that
# the card says the note was read only in part.
MAX_EXTRA_CHARS = 100_000
MAX_PARAGRAPH_CHARS = 5_000
_ALNUM = re.compile(r"[a-z0-9]+")
STAR_REPEATS = 4  # `<CLASS>*` repeats up to this many times unless `*N` says otherwise
BACKWARD_SCOPE = 5  # words a backward trigger reaches unless its rule says otherwise
SITE_WINDOW = 7  # words around a mention searched for its body site
# A "sentence" longer than this (a note without punctuation) is read in pieces of this many
# words: a real sentence is shorter, and the work per sentence stays bounded.
MAX_SENTENCE_WORDS = 150

# Mention statuses, strongest first: a mention both negated and historical is negated.
PRECEDENCE = ("NEGATED", "HYPOTHETICAL", "FAMILY", "HISTORICAL", "POSSIBLE")
STATUS_OF = {
    "NEGATED": "negated",
    "HYPOTHETICAL": "hypothetical",
    "FAMILY": "family",
    "HISTORICAL": "historical",
    "POSSIBLE": "possible",
}
STATUSES = ("affirmed", *STATUS_OF.values())
MODIFIERS = frozenset(PRECEDENCE)
CATEGORIES = MODIFIERS | {"PSEUDO", "TERMINATE"}
DIRECTIONS = {"forward", "backward", "both"}

TOKEN_RE = re.compile(r"\d+(?:\.\d+)?(?:/\d+)?|[A-Za-z0-9]+(?:['’/&][A-Za-z0-9]+)*|[?;:,()&]")
# Every pattern here runs in linear time on any text (tests/test_linear_time.py): `^` where
# only the start matters, and a run of . ! ? is tried from its first character only.
NUMBER_RE = re.compile(r"^\d+(?:\.\d+)?(?:/\d+)?$")
YEAR_RE = re.compile(r"^(?:19|20)\d\d$")
SPLIT_RE = re.compile(r"(?<![.!?])[.!?]++(?=\s|$)|;")
# Matched where the line's leading blanks end (see _header): no leading run to backtrack over.
HEADER_RE = re.compile(r"(?:[-*•][ \t]*)?([A-Za-z][A-Za-z0-9 /&'’()\-]{0,50}?)[ \t]*:")
NO_SPLIT = {"dr", "vs", "e.g", "i.e", "eg", "ie", "approx", "mr", "mrs", "ms", "st", "fig"}
# One more than the longest: a longer word seen through the window is no abbreviation either.
_NO_SPLIT_LOOKBACK = max(map(len, NO_SPLIT)) + 1
BREAKS_BACKWARD = {",", ";", "and"}  # a backward trigger's scope ends at these words
CLAUSE_ENDS = {",", ";", ":", "(", ")", "but"}  # a body site is looked for within the clause


# Latin look-alikes of the other scripts a note may carry (Unicode's confusables of the Latin
# letters, Cyrillic and Greek): "сramps" with a Cyrillic с, "dеnies" with a Cyrillic е read
# as the Latin words. Other scripts' letters stay as they are, and a word written in them is
# not read.
CONFUSABLES = str.maketrans(
    "аеорсухіјѕԁһӏԛԝАВЕКМНОРСТХУІЈЅοανριυκτχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdhlqwABEKMHOPCTXYIJSoavpiuktxABEZHIKMNOPTYX",
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def normalise(text: str) -> tuple[str, list[int] | None]:
    """The text as the reader reads it, and where each of its characters is in the text given
    (None: the same text). NFKC (full-width letters, ligatures), without format characters
    (zero-width spaces and joiners, bidi controls, soft hyphens: "de\u200bnies" reads as
    "denies") and with the Latin look-alikes of CONFUSABLES made Latin."""
    if text.isascii():
        return text, None
    out: list[str] = []
    origin: list[int] = []
    position = 0
    for run in _NON_ASCII.finditer(text):
        out.append(text[position : run.start()])
        origin.extend(range(position, run.start()))
        for index in range(run.start(), run.end()):
            char = text[index]
            if unicodedata.category(char) == "Cf":
                continue
            char = unicodedata.normalize("NFKC", char).translate(CONFUSABLES)
            out.append(char)
            origin.extend([index] * len(char))
        position = run.end()
    out.append(text[position:])
    origin.extend(range(position, len(text)))
    origin.append(len(text))  # the end
    return "".join(out), origin


def _back(origin: list[int], start: int, end: int) -> tuple[int, int]:
    """A span of the normalised text as a span of the text given."""
    return origin[start], (origin[end - 1] + 1 if end > start else origin[start])


# --- What the reader returns -----------------------------------------------------------------


@dataclass(frozen=True)
class NoteFinding:
    """One mention of a catalog concept in the note, with its status and where it is."""

    concept: str  # the catalog concept group, e.g. CRAMP
    status: str  # affirmed, possible, negated, historical, hypothetical or family
    start: int  # the words that triggered it, as offsets into the note text
    end: int
    sentence_start: int  # the sentence it is in
    sentence_end: int
    site: str | None = None  # calf, hamstring, thigh, foot, leg, back, saddle, ...
    side: str | None = None  # left, right or bilateral
    modifiers: tuple[str, ...] = ()  # the context categories that gave it its status
    code: dict = field(default_factory=dict, compare=False, hash=False)  # CodeableConcept

    @property
    def current(self) -> bool:
        return self.status == "affirmed"

    def quote(self, text: str, limit: int = QUOTE_LIMIT) -> str:
        """The words around the mention, within its sentence, at most `limit` characters (an
        ellipsis marks a cut), on one line: what a card may show, never more."""
        return snippet(text, self.start, self.end, self.sentence_start, self.sentence_end, limit)


def snippet(text: str, start: int, end: int, lo: int, hi: int, limit: int = QUOTE_LIMIT) -> str:
    """At most `limit` characters of text[lo:hi] around text[start:end], cut at word bounds."""
    if hi - lo <= limit:
        return _one_line(text[lo:hi])
    room = max(0, limit - (end - start))
    left = max(lo, start - room // 3)
    right = min(hi, left + limit)
    left = max(lo, right - limit)
    if left > lo:  # start at a word
        space = text.find(" ", left, start)
        left = space + 1 if space != -1 else left
    if right < hi:  # end at a word
        space = text.rfind(" ", end, right)
        right = space if space != -1 else right
    quote = _one_line(text[left:right])
    quote = ("…" if left > lo else "") + quote + ("…" if right < hi else "")
    return quote


def _one_line(text: str) -> str:
    if not text.isascii():  # no bidi control or zero-width character reaches a card
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return " ".join(text.split())


# --- The lexicon (valuesets/note-terms.yaml) -------------------------------------------------


@dataclass(frozen=True)
class Element:
    """One element of a pattern: some word sequences (or any number), repeated low..high."""

    options: dict[str, tuple[tuple[str, ...], ...]]  # first word -> the word sequences
    number: bool
    low: int
    high: int
    year: bool = False  # a number that is a calendar year ("in 2019")

    def steps(self, words: list[str], i: int) -> Iterator[int]:
        """Where one occurrence of the element starting at word i ends."""
        if i >= len(words):
            return
        if self.number:
            if NUMBER_RE.match(words[i]) and (not self.year or YEAR_RE.match(words[i])):
                yield i + 1
            return
        for option in self.options.get(words[i], ()):
            if tuple(words[i : i + len(option)]) == option:
                yield i + len(option)


@dataclass(frozen=True)
class Pattern:
    text: str
    elements: tuple[Element, ...]

    def first_words(self) -> tuple[set[str], bool]:
        """The words a match can start with, and whether it can start with a number."""
        words: set[str] = set()
        for element in self.elements:
            if element.number:
                return words, True
            words |= element.options.keys()
            if element.low > 0:
                return words, False
        raise ValueError(f"pattern '{self.text}' can match nothing")

    def longest(self, words: list[str], i: int) -> int | None:
        """The end of the longest match starting at word i, or None."""
        first = self.elements[0]
        if len(self.elements) == 1 and first.low == first.high == 1:  # one word or phrase
            return max(first.steps(words, i), default=None)
        follow = self._follow
        if follow is not None and not any(
            j < len(words) and words[j] in follow for j in first.steps(words, i)
        ):
            return None  # most tries end here: the second word cannot follow
        best = max(_ends(self.elements, words, i, 0), default=None)
        return best if best is not None and best > i else None

    @cached_property
    def next_words(self) -> frozenset[str] | None:
        """When the pattern starts with one required word and then a required word: the words
        that may follow the first, so a caller can skip the matcher at a glance."""
        first = self.elements[0]
        if first.low != 1 or first.high != 1 or first.number:
            return None
        if any(len(o) != 1 for options in first.options.values() for o in options):
            return None
        return self._follow

    @cached_property
    def _follow(self) -> frozenset[str] | None:
        """The words that must follow the first element, when both are required words."""
        if len(self.elements) < 2:
            return None
        first, second = self.elements[:2]
        if first.low < 1 or first.number or second.low < 1 or second.number:
            return None
        return frozenset(second.options)


def _ends(elements: tuple[Element, ...], words: list[str], i: int, k: int) -> Iterator[int]:
    if k == len(elements):
        yield i
        return
    yield from _repeat(elements, words, i, k, 0)


def _repeat(elements, words, i: int, k: int, count: int) -> Iterator[int]:
    element = elements[k]
    if count >= element.low:
        yield from _ends(elements, words, i, k + 1)
    if count < element.high:
        for j in element.steps(words, i):
            yield from _repeat(elements, words, j, k, count + 1)


@dataclass(frozen=True)
class Term:
    """A concept pattern, with what it implies beyond the concept's defaults."""

    concept: str
    pattern: Pattern
    code: dict | None = None
    status: str | None = None  # a word that carries its own status ("afebrile": NEGATED)
    sites: frozenset[str] | None = None  # counts only when located at one of these


@dataclass(frozen=True)
class Concept:
    name: str
    label: str
    groups: tuple[str, ...]
    code: dict
    by_side: dict[str, list[dict]]
    body_site: dict | None
    not_at: frozenset[str]
    yields_to: frozenset[str] = frozenset()  # concepts whose mention covering it drops it


@dataclass(frozen=True)
class Trigger:
    category: str
    direction: str
    pattern: Pattern
    max_scope: int | None = None
    only_with: frozenset[str] = frozenset()
    terminates: frozenset[str] = frozenset()  # TERMINATE: the categories it ends (all if empty)


class Index:
    """Patterns by the word they can start with, so each word of a note tries only those."""

    def __init__(self, items: list, pattern_of):
        self.by_word: dict[str, list] = {}
        self.by_number: list = []
        for item in items:
            words, number = pattern_of(item).first_words()
            for word in words:
                self.by_word.setdefault(word, []).append(item)
            if number:
                self.by_number.append(item)

    def at(self, word: str) -> list:
        found = self.by_word.get(word, [])
        return found + self.by_number if NUMBER_RE.match(word) else found


@dataclass(frozen=True)
class Lexicon:
    abbreviations: dict[str, tuple[str, ...]]
    concepts: dict[str, Concept]
    terms: Index
    exclusions: Index  # (concept, Pattern)
    triggers: Index
    sites: Index  # (site name, Pattern)
    sides: dict[tuple[str, ...], str]
    site_words: frozenset[str]  # words of body sites ("right ankle dorsiflexion": ankle)
    sections: dict[tuple[str, ...], str | None]  # header words -> category (None: no status)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when built with it
    """YAML without the 1.1 booleans: "no", "on" and "off" are words in this file."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@cache
def lexicon() -> Lexicon:
    return load_lexicon(content_dir("valuesets") / "note-terms.yaml")


def load_lexicon(path: Path) -> Lexicon:
    data = yaml.load(path.read_text("utf-8"), Loader=_Loader)  # noqa: S506 (a safe loader)
    abbreviations = {
        str(k).lower(): tuple(_words(str(v).lower(), {})) for k, v in data["abbreviations"].items()
    }

    def phrase(text: object) -> tuple[str, ...]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path.name}: not a word or phrase: {text!r}")
        return tuple(_words(text.lower(), abbreviations))

    classes = {
        name: tuple(phrase(entry) for entry in entries) for name, entries in data["classes"].items()
    }

    def compile_pattern(text: object) -> Pattern:
        if not isinstance(text, str):
            raise ValueError(f"{path.name}: a pattern must be text: {text!r}")
        return Pattern(text, tuple(_element(part, classes, phrase) for part in text.split()))

    concepts: dict[str, Concept] = {}
    terms: list[Term] = []
    exclusions: list[tuple[str, Pattern]] = []
    for name, spec in data["concepts"].items():
        concepts[name] = Concept(
            name,
            spec["label"],
            tuple(spec.get("groups") or [name]),
            spec["code"],
            spec.get("by_side") or {},
            spec.get("body_site"),
            frozenset(spec.get("not_at") or ()),
            frozenset(spec.get("yields_to") or ()),
        )
        for entry in spec["patterns"]:
            entry = entry if isinstance(entry, dict) else {"pattern": entry}
            status = entry.get("status")
            if status is not None and status.upper() not in MODIFIERS:
                raise ValueError(f"{path.name}: {name}: unknown status {status!r}")
            sites = entry.get("sites")
            terms.append(
                Term(
                    name,
                    compile_pattern(entry["pattern"]),
                    entry.get("code"),
                    status.upper() if status else None,
                    frozenset(sites) if sites else None,
                )
            )
        exclusions += [(name, compile_pattern(text)) for text in spec.get("exclude") or ()]

    triggers: list[Trigger] = []
    for rule in data["context"]:
        category = rule["category"]
        direction = rule.get("direction", "forward")
        if category not in CATEGORIES or direction not in DIRECTIONS:
            raise ValueError(f"{path.name}: bad context rule {category} {direction}")
        terminates = frozenset(rule.get("terminates") or ())
        if not terminates <= MODIFIERS:
            raise ValueError(f"{path.name}: TERMINATE names unknown categories {terminates}")
        only_with = frozenset(w for text in rule.get("only_with") or () for w in phrase(text))
        for text in rule["phrases"]:
            triggers.append(
                Trigger(
                    category,
                    direction,
                    compile_pattern(text),
                    rule.get("max_scope"),
                    only_with,
                    terminates,
                )
            )

    sites = [
        (name, Pattern(" ".join(phrase(e)), (_literal(phrase(e)),)))
        for name, entries in data["sites"].items()
        for e in entries
    ]
    sides = {phrase(entry): side for side, entries in data["sides"].items() for entry in entries}
    sections: dict[tuple[str, ...], str | None] = {}
    for category, headers in data["sections"].items():
        if category != "none" and category not in MODIFIERS:
            raise ValueError(f"{path.name}: unknown section category {category}")
        for header in headers:
            sections[phrase(header)] = None if category == "none" else category
    return Lexicon(
        abbreviations,
        concepts,
        Index(terms, lambda t: t.pattern),
        Index(exclusions, lambda e: e[1]),
        Index(triggers, lambda t: t.pattern),
        Index(sites, lambda s: s[1]),
        sides,
        frozenset(w for _, site in sites for w in site.text.split()),
        sections,
    )


def _literal(words: tuple[str, ...]) -> Element:
    return Element({words[0]: (words,)}, False, 1, 1)


def _element(part: str, classes: dict, phrase) -> Element:
    low, high = 1, 1
    if part != "?" and part.endswith("?"):
        low, high, part = 0, 1, part[:-1]
    else:
        star = re.search(r"\*(\d*)$", part)
        if star:
            low, high, part = 0, int(star.group(1) or STAR_REPEATS), part[: star.start()]
    if part in {"#", "#year"}:
        return Element({}, True, low, high, year=part == "#year")
    if part.startswith("<") and part.endswith(">"):
        if part[1:-1] not in classes:
            raise ValueError(f"unknown word class {part}")
        sequences = classes[part[1:-1]]
    else:
        sequences = tuple(phrase(word) for word in part.split("|"))
    options: dict[str, list[tuple[str, ...]]] = {}
    for sequence in sequences:
        options.setdefault(sequence[0], []).append(sequence)
    return Element({w: tuple(o) for w, o in options.items()}, False, low, high)


# --- Tokens, sentences, sections -------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    word: str  # lower case, abbreviations expanded (one note word may give several)
    start: int
    end: int


def _words(text: str, abbreviations: dict[str, tuple[str, ...]]) -> list[str]:
    return [t.word for t in tokenize(text, 0, len(text), abbreviations)]


def tokenize(
    text: str, start: int, end: int, abbreviations: dict[str, tuple[str, ...]]
) -> list[Token]:
    out = []
    for match in TOKEN_RE.finditer(text, start, end):
        raw = match.group().lower().replace("’", "'")
        if raw.endswith("'s") and raw not in abbreviations:
            raw = raw[:-2]
        words = abbreviations.get(raw)
        if words is None and "/" in raw and not NUMBER_RE.match(raw):
            # "bowel/bladder", "numbness/tingling": the parts, read as "or", each part where it
            # is in the note (not the whole token: "a/a/a/..." must not make every piece of an
            # overlong sentence span the whole of it)
            position, first = match.start(), True
            for part in raw.split("/"):
                if part:
                    if not first:
                        out.append(Token("or", position - 1, position))
                    for word in abbreviations.get(part, (part,)):
                        out.append(Token(word, position, position + len(part)))
                    first = False
                position += len(part) + 1
            continue
        for word in words if words is not None else (raw,):
            out.append(Token(word, match.start(), match.end()))
    return out


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    section: str | None  # the status its section header gives (None: none)
    tokens: tuple[Token, ...]
    header: tuple[int, int] | None = None  # where that header is in the text


def sentences(text: str, lex: Lexicon) -> list[Sentence]:
    """The note's sentences, each with its section's status."""
    out: list[Sentence] = []
    # Of a header alone on its line: until a blank line. (status, where the header is)
    section: tuple[str | None, tuple[int, int] | None] = (None, None)
    has_content = False
    for lo, hi in _logical_lines(text):
        if not text[lo:hi].strip():
            if has_content:
                section, has_content = (None, None), False
            continue
        header = _header(text, lo, hi, lex)
        line_section = section
        if header is not None:
            category, content_start, where = header
            if not text[content_start:hi].strip():  # a header alone: its block follows
                section, has_content = (category, where), False
                continue
            section, has_content = (None, None), False  # its text follows it: this line only
            line_section, lo = (category, where), content_start
        else:
            has_content = True
        for s_lo, s_hi in _split(text, lo, hi):
            own = _header(text, s_lo, s_hi, lex)  # "… today. Family history: mother has"
            status = line_section
            if own is not None and s_lo != lo:
                status, s_lo = (own[0], own[2]), own[1]
            out += _pieces(text, s_lo, s_hi, status, lex)
    return out


def _pieces(
    text: str, lo: int, hi: int, section: tuple[str | None, tuple[int, int] | None], lex: Lexicon
) -> list[Sentence]:
    """A sentence, or pieces of MAX_SENTENCE_WORDS words of an overlong one."""
    tokens = tokenize(text, lo, hi, lex.abbreviations)
    out = []
    for i in range(0, len(tokens), MAX_SENTENCE_WORDS):
        piece = tokens[i : i + MAX_SENTENCE_WORDS]
        lo_, hi_ = (lo, hi) if len(piece) == len(tokens) else (piece[0].start, piece[-1].end)
        header = section[1] if section[0] is not None else None
        out.append(Sentence(lo_, hi_, section[0], tuple(piece), header))
    return out


def name_sentences(text: str, lex: Lexicon) -> list[Sentence]:
    """A record's name read as sentences of its own: a name has no sections."""
    out: list[Sentence] = []
    for lo, hi in _logical_lines(text):
        for s_lo, s_hi in _split(text, lo, hi):
            out += _pieces(text, s_lo, s_hi, (None, None), lex)
    return out


def _logical_lines(text: str) -> Iterator[tuple[int, int]]:
    """Lines, with a line joined to the next when it was only wrapped ("denies fever,\\n
    chills"): it does not end a sentence and the next starts in lower case."""
    start = 0
    lines = []
    for line in text.split("\n"):
        lines.append((start, start + len(line)))
        start += len(line) + 1
    current = None
    for lo, hi in lines:
        if current is not None:
            before = text[current[0] : current[1]].rstrip()
            after = text[lo:hi].lstrip()
            if before and after[:1].islower() and before[-1] not in ".!?;:":
                current = (current[0], hi)
                continue
            yield current
        current = (lo, hi)
    if current is not None:
        yield current


def _split(text: str, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """Sentences of a line: at . ! ? followed by a space, and at ;. A "?" stays with the
    sentence it ends (it marks uncertainty)."""
    start = lo
    for match in SPLIT_RE.finditer(text, lo, hi):
        if match.group() != ";":
            # A bounded look back: a run of "Dr. Dr. ..." must not make the split quadratic.
            window = text[max(start, match.start() - _NO_SPLIT_LOOKBACK) : match.start()]
            if _last_word(window).lower() in NO_SPLIT:
                continue
        end = match.end() if "?" in match.group() else match.start()
        if text[start:end].strip():
            yield _trim(text, start, end)
        start = match.end()
    if text[start:hi].strip():
        yield _trim(text, start, hi)


def _last_word(window: str) -> str:
    """The letters and dots that end the window ("e.g", "Dr")."""
    k = len(window)
    while k and (window[k - 1] == "." or ("a" <= window[k - 1].lower() <= "z")):
        k -= 1
    return window[k:]


def _trim(text: str, lo: int, hi: int) -> tuple[int, int]:
    while lo < hi and text[lo].isspace():
        lo += 1
    while hi > lo and text[hi - 1].isspace():
        hi -= 1
    return lo, hi


def _header(
    text: str, lo: int, hi: int, lex: Lexicon
) -> tuple[str | None, int, tuple[int, int]] | None:
    """A known section header at the start of text[lo:hi]: (its status, where its content
    starts, where the header's words are); None when the text does not start with one."""
    start = lo
    while start < hi and text[start] in " \t":
        start += 1
    match = HEADER_RE.match(text, start, hi)
    if match:
        words = tuple(_words(match.group(1), lex.abbreviations))
        if words in lex.sections:
            return lex.sections[words], match.end(), match.span(1)
    words = tuple(_words(text[lo:hi], lex.abbreviations))
    if words and words in lex.sections and len(text[lo:hi].strip()) <= 60:
        # a header alone on its line, without a colon
        return lex.sections[words], hi, _trim(text, lo, hi)
    return None


# --- Reading ---------------------------------------------------------------------------------


@dataclass
class _Span:
    start: int  # word positions in the sentence
    end: int
    item: object  # Term, Trigger, or a site name


def read_note(text: str, lex: Lexicon | None = None) -> tuple[NoteFinding, ...]:
    """Every mention of a catalog concept in the note, in note order, each with its status.
    The first MAX_NOTE_CHARS are read whole; past them, only the paragraphs that can hold a
    term (a cheap, linear look for the words terms start with), so that a long note is read in
    full in linear time unless those paragraphs hold more than MAX_EXTRA_CHARS characters."""
    lex = lex or lexicon()
    found = _read(text[:MAX_NOTE_CHARS], lex, sentences)
    if len(text) > MAX_NOTE_CHARS:
        found += _read_rest(text, lex)[0]
    return found


def read_in_full(text: str, lex: Lexicon | None = None) -> bool:
    """Whether read_note reads every part of the note that can name a symptom."""
    return len(text) <= MAX_NOTE_CHARS or _read_rest(text, lex or lexicon(), dry=True)[1]


def _blocks(text: str, start: int) -> Iterator[tuple[int, int]]:
    """Paragraphs of text[start:] (split at blank lines); a paragraph longer than
    MAX_PARAGRAPH_CHARS as its lines, and a longer line in pieces ending at a sentence end or a
    space (a section never crosses a blank line)."""
    while start < len(text):
        end = text.find("\n\n", start)
        end = len(text) if end == -1 else end
        if end - start <= MAX_PARAGRAPH_CHARS:
            yield start, end
        else:
            line = start
            while line < end:
                stop = text.find("\n", line, end)
                stop = end if stop == -1 else stop
                while stop - line > MAX_PARAGRAPH_CHARS:
                    limit = line + MAX_PARAGRAPH_CHARS
                    cut = max(text.rfind(". ", line, limit), text.rfind(" ", line, limit))
                    cut = cut + 1 if cut > line else limit
                    yield line, cut
                    line = cut
                yield line, stop
                line = stop + 1
        start = end + 2


_OPENERS: dict[int, frozenset[str]] = {}


def _openers(lex: Lexicon) -> frozenset[str]:
    """Every word a term can start with, as the note writes it: the words themselves and the
    alphanumeric parts of abbreviations whose expansion holds one ("lbp", "n/t"). Made once
    per lexicon."""
    if id(lex) not in _OPENERS:
        first = set(lex.terms.by_word)
        for key, words in lex.abbreviations.items():
            if first.intersection(words):
                first.update(_ALNUM.findall(key.lower()))
        _OPENERS[id(lex)] = frozenset(first)
    return _OPENERS[id(lex)]


def _read_rest(text: str, lex: Lexicon, dry: bool = False) -> tuple[tuple[NoteFinding, ...], bool]:
    """The findings past MAX_NOTE_CHARS, and whether every piece that can hold one was read."""
    openers, numbers = _openers(lex), bool(lex.terms.by_number)
    found: list[NoteFinding] = []
    read = 0
    for lo, hi in _blocks(text, MAX_NOTE_CHARS):
        piece = text[lo:hi]
        words = set(_ALNUM.findall(piece.lower()))
        if not (words & openers or (numbers and any(w.isdigit() for w in words))):
            continue
        read += hi - lo
        if read > MAX_EXTRA_CHARS:
            return tuple(found), False
        if not dry:
            found += [_shifted(f, lo) for f in _read(piece, lex, sentences)]
    return tuple(found), True


def _shifted(finding: NoteFinding, by: int) -> NoteFinding:
    return replace(
        finding,
        start=finding.start + by,
        end=finding.end + by,
        sentence_start=finding.sentence_start + by,
        sentence_end=finding.sentence_end + by,
    )


def _read(text: str, lex: Lexicon, split) -> tuple[NoteFinding, ...]:
    read, origin = normalise(text)
    read = read[: 2 * MAX_NOTE_CHARS]  # NFKC may lengthen a character up to 18 times: bounded
    found: list[NoteFinding] = []
    for sentence in split(read, lex):
        found += _read_sentence(read, sentence, lex)
    if origin is None:
        return tuple(found)
    out = []
    for finding in found:
        start, end = _back(origin, finding.start, finding.end)
        lo, hi = _back(origin, finding.sentence_start, finding.sentence_end)
        out.append(replace(finding, start=start, end=end, sentence_start=lo, sentence_end=hi))
    return tuple(out)


MAX_NAME_CHARS = 1_000  # a record's name is short; a longer one is read up to here


def read_name(text: str, lex: Lexicon | None = None) -> tuple[NoteFinding, ...]:
    """The concepts a coded record's name names (its code.text or a coding's display, such
    as "Retention of urine, unspecified" or "History of basal cell carcinoma of skin"), each
    with its status: the note's terms and context triggers, without note sections."""
    lex = lex or lexicon()
    return _read(text[:MAX_NAME_CHARS], lex, name_sentences)


def _read_sentence(text: str, sentence: Sentence, lex: Lexicon) -> list[NoteFinding]:
    words = [t.word for t in sentence.tokens]
    targets = _targets(words, lex)
    if not targets:
        return []
    scope = _Scope.of(sentence, words, targets, lex)
    sites = _longest_first(_matches(words, lex.sites, lambda s: s[1]))
    located = []
    for target in targets:
        term: Term = target.item
        concept = lex.concepts[term.concept]
        site, side = _site_and_side(words, target, sites, lex)
        if term.sites is not None and site not in term.sites:
            continue
        if site in concept.not_at:
            continue
        located.append((target, term, concept, site, side))
    spans: dict[str, list[_Span]] = {}
    for target, *_ in located:
        spans.setdefault(target.item.concept, []).append(target)
    out = []
    for target, term, concept, site, side in located:
        # Saddle numbness is a saddle finding, not also a nerve symptom.
        if (
            concept.yields_to
            and site in YIELDING_SITES
            and any(
                other.start < target.end and target.start < other.end
                for name in concept.yields_to
                for other in spans.get(name, ())
            )
        ):
            continue
        if term.concept == "BILATERAL_SCIATICA":
            side = "bilateral"
        decided = scope.decide(text, target, term.status)
        first, last = sentence.tokens[target.start], sentence.tokens[target.end - 1]
        out.append(
            NoteFinding(
                term.concept,
                decided.status,
                first.start,
                last.end,
                sentence.start,
                sentence.end,
                site,
                side,
                decided.modifiers,
                _code(concept, term, side),
            )
        )
    return out


# A finding that yields to another concept (`yields_to`) is dropped where that concept's
# mention covers it, unless it is located somewhere of its own ("numbness in the left leg and
# perineum" is both a nerve symptom and saddle numbness).
YIELDING_SITES = {None, "saddle", "buttock"}


# --- The context step: is a mention current, and what decided -------------------------------


@dataclass(frozen=True)
class TriggerHit:
    """The context trigger that decided a target's status, as it stands in the text."""

    phrase: str  # the text's own words
    category: str  # NEGATED, HYPOTHETICAL, FAMILY, HISTORICAL or POSSIBLE
    start: int
    end: int


@dataclass(frozen=True)
class SectionHit:
    """The section header that decided a target's status."""

    header: str
    category: str
    start: int
    end: int


@dataclass(frozen=True)
class Context:
    """Whether the words at start..end are current, and why (ConText)."""

    status: str  # affirmed, negated, historical, hypothetical, family or possible
    start: int  # the target, as offsets into the text
    end: int
    trigger: TriggerHit | None = None  # the trigger that decided (None: none did)
    section: SectionHit | None = None  # the section header that decided (None: none did)
    modifiers: tuple[str, ...] = ()  # every category that applies, strongest first

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "span": [self.start, self.end],
            "trigger": None if self.trigger is None else asdict(self.trigger),
            "section": None if self.section is None else asdict(self.section),
            "modifiers": list(self.modifiers),
        }


def context(text: str, target: str | tuple[int, int], lex: Lexicon | None = None) -> Context:
    """The status of any target in a note: a phrase (its first occurrence, in any case) or a
    (start, end) span of characters. The same step read_note and read_name use for each
    concept mention. ValueError when the phrase is not in the text or the span is not words
    within one sentence."""
    lex = lex or lexicon()
    given = text[:MAX_NOTE_CHARS]
    text, origin = normalise(given)
    if origin is None:
        start, end = _target_span(text, target)
    elif isinstance(target, str):
        start, end = _target_span(text, normalise(target)[0])
    else:
        start, end = _target_span(given, target)
        start, end = bisect_left(origin, start), bisect_left(origin, end)
    for sentence in sentences(text, lex):
        if sentence.start <= start and end <= sentence.end:
            break
    else:
        raise ValueError("the target is not within one sentence of the text")
    inside = [i for i, t in enumerate(sentence.tokens) if t.start < end and start < t.end]
    if not inside:
        raise ValueError("the target holds no word")
    words = [t.word for t in sentence.tokens]
    span = _Span(inside[0], inside[-1] + 1, None)
    concepts = _targets(words, lex)
    own = next(
        (
            c.item.status
            for c in concepts
            if (c.start, c.end) == (span.start, span.end) and c.item.status
        ),
        None,
    )
    scope = _Scope.of(sentence, words, [*concepts, span], lex)
    decided = scope.decide(text, span, own)
    trigger, section = decided.trigger, decided.section
    if origin is not None:
        start, end = _back(origin, start, end)
        if trigger is not None:
            trigger = replace(
                trigger,
                **dict(
                    zip(("start", "end"), _back(origin, trigger.start, trigger.end), strict=True)
                ),
            )
        if section is not None:
            section = replace(
                section,
                **dict(
                    zip(("start", "end"), _back(origin, section.start, section.end), strict=True)
                ),
            )
    return Context(decided.status, start, end, trigger, section, decided.modifiers)


def _target_span(text: str, target: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(target, str):
        words = target.split()
        if not words:
            raise ValueError("the target phrase is empty")
        pattern = r"\s+".join(re.escape(w) for w in words)
        match = re.search(pattern, text, re.IGNORECASE)
        if match is None:
            raise ValueError("the target phrase is not in the text")
        return match.span()
    start, end = target
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
        raise ValueError(f"the target span {start}-{end} is not within the text")
    return start, end


@dataclass(frozen=True)
class _Decided:
    status: str
    modifiers: tuple[str, ...]
    trigger: TriggerHit | None
    section: SectionHit | None


@dataclass(frozen=True)
class _Scope:
    """A sentence's context triggers, found once, and the step that applies them to a target."""

    sentence: Sentence
    words: list[str]
    scoping: list[_Span]  # triggers that give a status
    terminators: list[_Span]

    @classmethod
    def of(cls, sentence: Sentence, words: list[str], targets: list[_Span], lex: Lexicon):
        """The sentence's triggers, outside the targets (a term's own words never trigger:
        the "absent" of "absent sensation", the "not" of "not voided")."""
        triggers = _longest_first(_matches(words, lex.triggers, lambda t: t.pattern))
        triggers = [
            t for t in triggers if not any(g.start <= t.start and t.end <= g.end for g in targets)
        ]
        return cls(
            sentence,
            words,
            [t for t in triggers if t.item.category in MODIFIERS],
            [t for t in triggers if t.item.category == "TERMINATE"],
        )

    def decide(self, text: str, target: _Span, own: str | None = None) -> _Decided:
        """The target's status: the strongest category among the triggers whose scope reaches
        it, its section's and its term's own ("afebrile"); with what decided."""
        applying = [t for t in self.scoping if _applies(t, target, self.terminators, self.words)]
        modifiers = {t.item.category for t in applying}
        if self.sentence.section:
            modifiers.add(self.sentence.section)
        if own:
            modifiers.add(own)
        ordered = tuple(c for c in PRECEDENCE if c in modifiers)
        if not ordered:
            return _Decided("affirmed", (), None, None)
        winner = ordered[0]
        tokens = self.sentence.tokens
        trigger = None
        deciders = [t for t in applying if t.item.category == winner]
        if deciders:
            nearest = min(deciders, key=lambda t: _distance(t, target))
            lo, hi = tokens[nearest.start].start, tokens[nearest.end - 1].end
            trigger = TriggerHit(text[lo:hi], winner, lo, hi)
        elif own == winner:
            lo, hi = tokens[target.start].start, tokens[target.end - 1].end
            trigger = TriggerHit(text[lo:hi], winner, lo, hi)
        section = None
        if self.sentence.section == winner and self.sentence.header is not None:
            lo, hi = self.sentence.header
            section = SectionHit(text[lo:hi], winner, lo, hi)
        return _Decided(STATUS_OF[winner], ordered, trigger, section)


def _distance(trigger: _Span, target: _Span) -> int:
    return trigger.start - target.end if trigger.start >= target.end else target.start - trigger.end


def _matches(words: list[str], index: Index, pattern_of) -> list[_Span]:
    spans = []
    last = len(words) - 1
    for i, word in enumerate(words):
        following = words[i + 1] if i < last else None
        for item in index.at(word):
            pattern = pattern_of(item)
            after = pattern.next_words
            if after is not None and following not in after:
                continue
            end = pattern.longest(words, i)
            if end is not None:
                spans.append(_Span(i, end, item))
    return spans


def _longest_first(spans: list[_Span]) -> list[_Span]:
    """Overlapping spans: the longest wins (then the earliest); spans on the very same words
    all stay (one phrase may be a trigger in two directions)."""
    kept: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start - s.end, s.start)):
        clash = [k for k in kept if k.start < span.end and span.start < k.end]
        if all(k.start == span.start and k.end == span.end for k in clash):
            kept.append(span)
    return sorted(kept, key=lambda s: (s.start, s.end))


def _targets(words: list[str], lex: Lexicon) -> list[_Span]:
    """Concept mentions: per concept, outside its exclusions, the longest where they overlap."""
    excluded = _matches(words, lex.exclusions, lambda e: e[1])
    by_concept: dict[str, list[_Span]] = {}
    for span in _matches(words, lex.terms, lambda t: t.pattern):
        concept = span.item.concept
        if any(
            e.item[0] == concept and e.start <= span.start and span.end <= e.end for e in excluded
        ):
            continue
        by_concept.setdefault(concept, []).append(span)
    targets = []
    for spans in by_concept.values():
        kept: list[_Span] = []
        for span in sorted(spans, key=lambda s: (s.start - s.end, s.start)):
            if not any(k.start < span.end and span.start < k.end for k in kept):
                kept.append(span)
        targets += kept
    return sorted(targets, key=lambda s: (s.start, s.end))


def _applies(trigger: _Span, target: _Span, terminators: list[_Span], words: list[str]) -> bool:
    """Whether a trigger's scope reaches the target (ConText): in its direction, within its
    reach, with no terminator of its category in between."""
    rule: Trigger = trigger.item
    if rule.only_with and not rule.only_with & set(words[trigger.end :]):
        return False
    forward = target.start >= trigger.start and target.end > trigger.end
    backward = target.end <= trigger.end and target.start < trigger.start
    if forward and rule.direction in {"forward", "both"}:
        gap = (trigger.end, target.start)
        reach = rule.max_scope
    elif backward and rule.direction in {"backward", "both"}:
        gap = (target.end, trigger.start)
        reach = rule.max_scope if rule.max_scope is not None else BACKWARD_SCOPE
        if any(w in BREAKS_BACKWARD for w in words[gap[0] : gap[1]]):
            return False
    else:
        return False
    if reach is not None and gap[1] - gap[0] > reach:
        return False
    return not any(
        (not t.item.terminates or rule.category in t.item.terminates)
        and gap[0] <= t.start
        and t.end <= gap[1]
        for t in terminators
    )


def _site_and_side(
    words: list[str], target: _Span, sites: list[_Span], lex: Lexicon
) -> tuple[str | None, str | None]:
    """The body site nearest the mention within its clause (inside it first), and the side
    named just before that site (or just before the mention when no site is named)."""
    inside = [s for s in sites if target.start <= s.start and s.end <= target.end]
    best, distance = (inside[0], 0) if inside else (None, None)
    for site in sites if best is None else ():
        if site.start >= target.end:
            gap = (target.end, site.start)
        elif site.end <= target.start:
            gap = (site.end, target.start)
        else:
            continue
        if gap[1] - gap[0] > SITE_WINDOW or any(w in CLAUSE_ENDS for w in words[gap[0] : gap[1]]):
            continue
        if distance is None or gap[1] - gap[0] < distance:
            best, distance = site, gap[1] - gap[0]
    if best is not None:
        side = _side_near(words, best.start, best.end, lex)
        return best.item[0], side or _side_near(words, target.start, target.end, lex)
    return None, _side_near(words, target.start, target.end, lex)


SIDE_FILLERS = {"and", "the", "his", "her", "or", "of", "in"}


def _side_near(words: list[str], start: int, end: int, lex: Lexicon) -> str | None:
    """Left, right or bilateral: side words just before words[start:end] ("left calf",
    "left and right calves"), or just after it ("calf bilaterally", "calf on the left")."""
    found = set()
    i = start - 1
    while i >= 0 and start - i <= 4:
        for size in (2, 1):
            if i - size + 1 >= 0 and tuple(words[i - size + 1 : i + 1]) in lex.sides:
                found.add(lex.sides[tuple(words[i - size + 1 : i + 1])])
                i -= size
                break
        else:
            if words[i] not in SIDE_FILLERS and words[i] not in lex.site_words:
                break
            i -= 1
    after = words[end : end + 3]
    if after[:1] and lex.sides.get((after[0],)) == "bilateral":
        found.add("bilateral")
    elif after[:1] == ["("] and after[2:3] == [")"] and (after[1],) in lex.sides:
        found.add(lex.sides[(after[1],)])  # "sciatica (L)"
    elif after[:1] == ["on"]:
        named = after[2:3] if after[1:2] == ["the"] else after[1:2]
        if named and (named[0],) in lex.sides:
            found.add(lex.sides[(named[0],)])
    if "bilateral" in found or {"left", "right"} <= found:
        return "bilateral"
    return next(iter(found), None)


def _code(concept: Concept, term: Term, side: str | None) -> dict:
    """The CodeableConcept a problem-list entry for the mention would carry."""
    code = dict(term.code or concept.code)
    if side in concept.by_side and term.code is None:
        code["coding"] = list(concept.by_side[side])
    return code
