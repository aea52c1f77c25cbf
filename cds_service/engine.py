"""One hook request, from validated JSON to the response: shared by HTTP and the CLI."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from . import cards, fhircheck, notes, quiet, terminology, validation
from .chart import build_chart
from .errors import InvalidRequest, Issue
from .fhir_client import FhirClient
from .gather import gather
from .rules import evaluate_rules
from .services import Service
from .settings import Settings
from .tolerant import tolerate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    response: dict
    rule_ids: tuple[str, ...]
    fetched: tuple[str, ...]
    elapsed_ms: float
    tolerated: tuple[str, ...] = ()  # field paths of single objects read as one-item arrays
    # Per card, in order: a fingerprint of the evidence behind it (quiet.evidence_fingerprint;
    # keyed before it is stored, never logged).
    evidence: tuple[str, ...] = ()


def validate_request(service: Service, body: object) -> dict:
    """The request as a dict, or InvalidRequest naming every field that is wrong."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object", None)
    issues = validation.problems("request", body)
    if isinstance(body.get("hook"), str) and body["hook"] != service.hook:
        issues.append(
            Issue(
                f"hook: this service '{service.id}' answers the '{service.hook}' hook, "
                f"not '{body['hook']}'",
                "hook",
            )
        )
    if isinstance(body.get("context"), dict):
        issues += validation.problems(service.context_schema, body["context"], "context")
    if issues:
        raise InvalidRequest(issues)
    return body


class Engine:
    def __init__(self, settings: Settings, client: FhirClient | None = None):
        self.settings = settings
        self.client = client or FhirClient(settings)
        self.terminology = terminology.load()
        cards.prepare()  # load, check and prepare the card content at start-up, not on a request
        notes.lexicon()  # and the note reader's terms

    def close(self) -> None:
        self.client.close()

    def warm_up(self) -> None:
        """Load now what the first requests would load lazily (both validators of every schema,
        the FHIR models of the resources rules read): a served worker calls this before it
        freezes its start-up objects out of the garbage collector (server.py)."""
        validation.warm_up()
        fhircheck.warm_up()

    def evaluate(
        self,
        service: Service,
        body: object,
        now: datetime | None = None,
        fhir_allowed: Callable[[str], bool] | None = None,
    ) -> Outcome:
        """The response to one hook request. `fhir_allowed` decides whether the request's
        fhirServer may be sent anything (see gather); None (the operator's own CLI) allows any."""
        started = time.monotonic()
        tolerated = tolerate(body, service.prefetch)  # in place, before the schemas see it
        request = validate_request(service, body)
        gathered = gather(
            service, request, self.client, self.settings.fhir_deadline_s, fhir_allowed
        )
        chart = build_chart(
            service.hook,
            request["context"],
            gathered,
            self.terminology,
            now or self.settings.fixed_now or datetime.now(UTC),
        )
        findings, trigger = evaluate_rules(chart)
        response = {"cards": cards.render(findings, trigger, chart, request["hookInstance"])}
        if self.settings.validate_responses:
            problems = validation.problems("response", response)
            if problems:  # a defect of ours: log it by rule id, never the content
                log.error("response failed its schema: %s", [p.expression for p in problems])
        return Outcome(
            response,
            tuple(f.rule_id for f in findings),
            tuple(gathered.fetched),
            (time.monotonic() - started) * 1000,
            tuple(tolerated[:20]),
            tuple(quiet.evidence_fingerprint(f) for f in findings),
        )
