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
    """Base of the errors a client can be told about."""

    status = 400

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


class UnsupportedMediaType(CdsError):
    status = 415
    default_code = "not-supported"


class PayloadTooLarge(CdsError):
    status = 413
    default_code = "too-costly"


class DataUnavailable(CdsError):
    """Data the rules need could be had neither from prefetch nor from the FHIR server."""

    status = 412
    default_code = "processing"


class ConfigurationError(Exception):
    """The operator's configuration is wrong; raised at start-up, never per request."""


def operation_outcome(issues: Sequence[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}
