"""A small, safe renderer for the markdown that card detail uses.

Card detail mixes clinician-written text (cards/*.yaml) with values from the patient's record
(condition names, drug names, evidence lines), so it is untrusted. The renderer is escape-first:
every character of the input reaches the page through `markupsafe.escape`, and the only tags in
the output are the fixed ones written below. Raw HTML in the input is shown as text, never
interpreted; a link is made only for an http(s) URL.

Supported: paragraphs (blank-line separated), `-`/`*`/`+` and `1.` lists, `#` headings (shown
as bold paragraphs: a card has no room for headings), `**bold**`, `*italic*`, `` `code` ``,
`[label](https://...)`, and backslash escapes. Anything else is plain text.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from markupsafe import Markup, escape

_BULLET = re.compile(r"^\s{0,3}[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s{0,3}\d{1,9}[.)]\s+(.*)$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_INLINE = re.compile(
    r"""
      \\(?P<escaped>[\\`*_\[\]()\#+.!-])
    | `(?P<code>[^`\n]+)`
    | \[(?P<label>[^\[\]\n]+)\]\((?P<url>[^()\s]+)\)
    | \*\*(?P<strong>[^\s*](?:(?:[^*]|\*(?!\*))*?[^\s\\])?)\*\*
    | (?<![*\w])\*(?P<em>[^\s*](?:[^*]*?[^\s*\\])?)\*(?![*\w])
    """,
    re.VERBOSE | re.DOTALL,
)


def render(text: str) -> Markup:
    """The markdown as HTML that is safe to put in a page."""
    out: list[str] = []
    for kind, lines in _blocks(text.replace("\r\n", "\n").replace("\r", "\n")):
        if kind == "p":
            out.append(f"<p>{inline(chr(10).join(lines))}</p>")
        elif kind == "h":
            out.append(f'<p class="md-heading"><strong>{inline(lines[0])}</strong></p>')
        elif kind == "hr":
            out.append("<hr>")
        else:
            items = "".join(f"<li>{inline(item)}</li>" for item in lines)
            out.append(f"<{kind}>{items}</{kind}>")
    return Markup("\n".join(out))  # noqa: S704 - every piece above is escaped by `inline`


def _blocks(text: str):
    """(kind, lines): "p" paragraph lines, "h" a heading, "ul"/"ol" item texts, "hr"."""
    kind, lines = None, []
    for line in text.split("\n"):
        bullet, numbered = _BULLET.match(line), _NUMBERED.match(line)
        if not line.strip():
            if kind:
                yield kind, lines
            kind, lines = None, []
        elif _RULE.match(line):
            if kind:
                yield kind, lines
            yield "hr", []
            kind, lines = None, []
        elif heading := _HEADING.match(line):
            if kind:
                yield kind, lines
            yield "h", [heading.group(1)]
            kind, lines = None, []
        elif bullet or numbered:
            item_kind = "ul" if bullet else "ol"
            if kind != item_kind:
                if kind:
                    yield kind, lines
                kind, lines = item_kind, []
            lines.append((bullet or numbered).group(1))
        elif kind in ("ul", "ol") and line[:1].isspace():
            lines[-1] += "\n" + line.strip()  # a continuation of the item
        elif kind == "p":
            lines.append(line)
        else:
            if kind:
                yield kind, lines
            kind, lines = "p", [line]
    if kind:
        yield kind, lines


def inline(text: str) -> Markup:
    """Emphasis, code, links and escapes in one line or paragraph; the rest escaped."""
    out: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        out.append(escape(text[position : match.start()]))
        position = match.end()
        if match.group("escaped") is not None:
            out.append(escape(match.group("escaped")))
        elif match.group("code") is not None:
            out.append(f"<code>{escape(match.group('code'))}</code>")
        elif match.group("label") is not None:
            out.append(_link(match.group("label"), match.group("url"), match.group(0)))
        elif match.group("strong") is not None:
            out.append(f"<strong>{inline(match.group('strong'))}</strong>")
        else:
            out.append(f"<em>{inline(match.group('em'))}</em>")
    out.append(escape(text[position:]))
    return Markup("".join(out))  # noqa: S704 - each piece is escaped or a fixed tag


def _link(label: str, url: str, source: str) -> str:
    if not safe_url(url):
        return escape(source)
    return f'<a href="{escape(url)}" rel="noopener noreferrer" target="_blank">{inline(label)}</a>'


def safe_url(url: object) -> bool:
    """Whether a URL from content may be a link: absolute http(s) with a host, nothing else."""
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)
