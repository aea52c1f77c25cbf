"""Domain exceptions. The HTTP layer maps each to a status code and an OperationOutcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: what went wrong and where (a dotted path into the request)."""

    diagnostics: str
    expression: str | None = None
    code: str = "invalid"
    severity: str = "error"

    def to_fhir(self) -> dict:
        issue = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


class CdsError(Exception):
    """Base of the errors a client can be told about. `reason` is the short code the access
    log gives for the refusal (never a value from the request)."""

    status = 400
    reason = "invalid"

    def __init__(self, issues: Sequence[Issue] | str, expression: str | None = None):
        if isinstance(issues, str):
            issues = [Issue(issues, expression, self.default_code)]
        self.issues = list(issues)
        super().__init__("; ".join(i.diagnostics for i in self.issues))

    default_code = "invalid"

    def operation_outcome(self) -> dict:
        return operation_outcome(self.issues)


class InvalidRequest(CdsError):
    status = 400


class UnknownService(CdsError):
    status = 404
    default_code = "not-found"
    reason = "not-found"


class UnsupportedMediaType(CdsError):
    status = 415
    default_code = "not-supported"
    reason = "unsupported-media-type"


class PayloadTooLarge(CdsError):
    status = 413
    default_code = "too-costly"
    reason = "too-large"


class DataUnavailable(CdsError):
    """Data the rules need could be had neither from prefetch nor from the FHIR server."""

    status = 412
    default_code = "processing"
    reason = "data-unavailable"


class FhirServerNotAllowed(DataUnavailable):
    """Data the rules need must be read from a `fhirServer` the caller may not name: nothing
    is sent there (the FHIR-server policy of the trust configuration)."""

    default_code = "forbidden"
    reason = "fhir-server-policy"


class StoreUnavailable(CdsError):
    """A database or Redis that holds shared state does not answer (a short connect timeout):
    503 with Retry-After. Nothing the client sent is wrong; the same request may be sent again
    (feedback is idempotent)."""

    status = 503
    default_code = "transient"
    reason = "store-unavailable"
    retry_after_s = 5


class ConfigurationError(Exception):
    """The operator's configuration is wrong; raised at start-up, never per request."""


def operation_outcome(issues: Sequence[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}
