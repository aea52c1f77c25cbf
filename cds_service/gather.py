"""Data gathering: prefetch as given; what is absent is fetched from fhirServer; null is "none".

Prefetch rules (CDS Hooks 2.0):
- a key whose value is `null` means the client has no such data: nothing is fetched;
- an absent key, or an OperationOutcome in its place, is fetched from `fhirServer`;
- a Bundle (searchset, collection, or no `type`) gives its entries; a `next` link is followed on
  the FHIR server up to the paging cap; a single resource stands for itself.

The FHIR-server policy is applied here, where a request is about to be sent, and only here: a
`fhirServer` the caller may not name gets nothing. When only optional keys (or later pages) would
be read there, the cards come from what was given and name the gap; when a required key would,
the answer is 412 naming the policy. A complete prefetch never looks at `fhirServer`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import DataUnavailable, FhirServerNotAllowed, InvalidRequest, Issue
from .fhir_client import FhirClient, next_link
from .services import Service
from .trust import BadUrl, parse_http_url

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class Gap:
    """Data the service could not have, named in the card detail: the prefetch key, why (a key
    of `gaps:` in cards/_common.yaml) and, for a fault of the FHIR server, what it was."""

    key: str
    reason: str  # no-server, not-allowed, not-read, partial
    detail: str = ""


@dataclass
class Gathered:
    """The patient's resources by type, and what could not be had (named in card details)."""

    resources: dict[str, list[dict]] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)  # prefetch keys read from the FHIR server
    unavailable: set[str] = field(default_factory=set)  # optional keys that could not be had

    def of_type(self, resource_type: str) -> list[dict]:
        return self.resources.get(resource_type, [])

    def add(self, resources: list[dict]) -> None:
        for resource in resources:
            self.resources.setdefault(resource["resourceType"], []).append(resource)


def render_template(template: str, context: dict) -> str | None:
    """Fill `{{context.X}}` tokens; None when a token names an absent or non-primitive field."""
    missing = False

    def fill(match: re.Match) -> str:
        nonlocal missing
        value = context.get(match.group(1))
        if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
            missing = True
            return ""
        return str(value)

    rendered = _TOKEN.sub(fill, template)
    return None if missing else rendered


def gather(
    service: Service,
    request: dict,
    client: FhirClient,
    deadline_s: float,
    fhir_allowed: Callable[[str], bool] | None = None,
) -> Gathered:
    """`fhir_allowed` decides whether the request's fhirServer may be sent anything (None, the
    operator's own CLI: any)."""
    started = time.monotonic()
    deadline = started + deadline_s
    prefetch = request.get("prefetch") or {}
    context = request["context"]
    gathered = Gathered()
    to_fetch: dict[str, str] = {}
    continued: set[str] = set()  # keys whose first page was prefetched: a failure is a gap only

    for key, query in service.prefetch.items():
        if key not in prefetch:
            rendered = render_template(query.template, context)
            if rendered is not None:
                to_fetch[key] = rendered
            continue
        value = prefetch[key]
        if value is None:
            continue  # the client has no such data
        if value.get("resourceType") == "OperationOutcome":
            rendered = render_template(query.template, context)
            if rendered is not None:
                to_fetch[key] = rendered
            continue
        gathered.add(_resources_of(value, key))
        page = next_link(value) if value.get("resourceType") == "Bundle" else None
        if page:
            to_fetch[key] = page  # the client sent the first page; read the rest
            continued.add(key)

    if to_fetch:
        _fetch(service, request, client, to_fetch, continued, deadline, gathered, fhir_allowed)
    log.debug("gathered in %.1f ms", (time.monotonic() - started) * 1000)
    return gathered


def _fetch(
    service: Service,
    request: dict,
    client: FhirClient,
    to_fetch: dict[str, str],
    continued: set[str],
    deadline: float,
    gathered: Gathered,
    fhir_allowed: Callable[[str], bool] | None,
) -> None:
    def needed(key: str) -> bool:
        return service.prefetch[key].required and key not in continued

    server = request.get("fhirServer")
    if server:
        try:
            parse_http_url(server)
        except BadUrl as problem:
            raise InvalidRequest(f"fhirServer {problem}", "fhirServer") from None
    if not server:
        failures = [
            Issue(
                f"prefetch '{key}' was not provided and the request names no fhirServer "
                "to read it from",
                f"prefetch.{key}",
                "required",
            )
            for key in to_fetch
            if needed(key)
        ]
        if failures:
            raise DataUnavailable(failures)
        gathered.gaps.extend(Gap(key, "no-server") for key in to_fetch)
        gathered.unavailable.update(to_fetch)
        return
    if fhir_allowed is not None and not fhir_allowed(server):
        needed_keys = [key for key in to_fetch if needed(key)]
        if needed_keys:
            raise FhirServerNotAllowed(
                [
                    Issue(
                        "fhirServer: this FHIR server is not allowed for this client (FHIR-server "
                        "policy: the service sends requests and access tokens only to FHIR "
                        "servers its operator allowed for the calling issuer); nothing was sent",
                        "fhirServer",
                        "forbidden",
                    ),
                    *(
                        Issue(
                            f"prefetch '{key}' was not provided and would have to be read from "
                            "fhirServer, which this client may not name: send it in the prefetch",
                            f"prefetch.{key}",
                            "forbidden",
                        )
                        for key in needed_keys
                    ),
                ]
            )
        gathered.gaps.extend(Gap(key, "not-allowed") for key in to_fetch)
        gathered.unavailable.update(to_fetch)
        return
    token = (request.get("fhirAuthorization") or {}).get("access_token")
    # The URL connected to is the one the policy allowed, in the same strict reading.
    results = client.fetch_all(str(parse_http_url(server)), token, to_fetch, deadline)
    failures = []
    for key, result in results.items():
        if key not in continued:
            gathered.fetched.append(key)
        if result.ok:
            gathered.add([r for r in result.resources if _is_resource(r)])
            gathered.gaps.extend(Gap(key, "partial", note) for note in result.notes)
        elif needed(key):
            failures.append(
                Issue(
                    f"prefetch '{key}' could not be read from the FHIR server: {result.error}",
                    f"prefetch.{key}",
                    "processing",
                )
            )
        else:
            gathered.gaps.append(Gap(key, "not-read", result.error or ""))
            gathered.unavailable.add(key)
    if failures:
        raise DataUnavailable(failures)


def _resources_of(value: dict, key: str) -> list[dict]:
    """The resources of a prefetch value. A resource given twice in a Bundle (same type and id)
    is used once; given twice with different content, the client must say which is true."""
    if value.get("resourceType") != "Bundle":
        return [value]
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidRequest(f"prefetch.{key}.entry must be an array", f"prefetch.{key}.entry")
    resources = []
    first_of: dict[tuple[str, str], int] = {}  # (type, id) -> entry index of its first copy
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None:
            continue  # an entry without a resource (e.g. a deleted one) carries no data
        if not _is_resource(resource):
            raise InvalidRequest(
                f"prefetch.{key}.entry[{index}].resource is not a FHIR resource",
                f"prefetch.{key}.entry[{index}].resource",
            )
        rid = resource.get("id")
        if isinstance(rid, str):
            identity = (resource["resourceType"], rid)
            first = first_of.setdefault(identity, index)
            if first != index:
                if entries[first]["resource"] != resource:
                    raise InvalidRequest(
                        # Entries by position, not the resource id, which may be an MRN.
                        f"prefetch.{key}: entry[{first}] and entry[{index}] are the same "
                        f"{identity[0]} (same id) with different content",
                        f"prefetch.{key}",
                    )
                continue  # the same resource again: used once
        if resource["resourceType"] != "OperationOutcome":
            resources.append(resource)
    return resources


def _is_resource(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("resourceType"), str)
