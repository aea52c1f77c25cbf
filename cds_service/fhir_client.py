"""Reads from the EHR's FHIR server: pooled sessions, explicit timeouts, parallel, bounded.

The access token is handed in per call and only ever placed in the Authorization header of
requests to the FHIR server the request named. It is never logged and never stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

from . import metrics
from .settings import Settings
from .trust import BadUrl, HttpUrl, parse_http_url

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
FHIR_JSON = "application/fhir+json"


@dataclass
class FetchResult:
    """What one query gave: resources, or the reason it failed; `notes` name partial results."""

    query: str
    resources: list[dict] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    requests_made: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class FhirClient:
    """One pooled `requests.Session` per FHIR server base URL, shared by all requests."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.fhir_workers, thread_name_prefix="fhir"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()

    def _session(self, base_url: str) -> requests.Session:
        with self._lock:
            session = self._sessions.get(base_url)
            if session is None:
                session = requests.Session()
                session.trust_env = False  # no proxies or .netrc credentials from the environment
                adapter = HTTPAdapter(
                    pool_connections=1, pool_maxsize=self._settings.fhir_workers, max_retries=0
                )
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.headers.update({"Accept": FHIR_JSON, "User-Agent": "crampcds"})
                self._sessions[base_url] = session
            return session

    def fetch_all(
        self,
        base_url: str,
        token: str | None,
        queries: dict[str, str],
        deadline: float,
    ) -> dict[str, FetchResult]:
        """Run every query in parallel; what has not answered by `deadline` (monotonic) fails.

        A query is a path relative to `base_url` (`Condition?patient=1`) or an absolute URL on
        the same server (a `next` page link).
        """
        futures: dict[str, Future[FetchResult]] = {
            key: self._executor.submit(self._fetch, base_url, token, query, deadline)
            for key, query in queries.items()
        }
        wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        results = {}
        budget = self._settings.fhir_deadline_s
        for key, future in futures.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                results[key] = future.result()
            elif future.done() and future.exception() is not None:
                exc = future.exception()
                log.warning("fhir query %s raised %s", key, type(exc).__name__)
                results[key] = FetchResult(queries[key], error=f"unexpected {type(exc).__name__}")
            else:
                future.cancel()
                results[key] = FetchResult(
                    queries[key], error=f"no answer within the deadline of {budget:g} s"
                )
        return results

    def _fetch(self, base_url: str, token: str | None, query: str, deadline: float) -> FetchResult:
        result = FetchResult(query)
        base = base_url.rstrip("/") + "/"
        origin = parse_http_url(base)
        url: str | None = urljoin(base, query)
        seen: set[str] = set()
        pages = 0
        while url:
            # Every URL requested is read by the strict parser first, and the text requested is
            # what it read: the same-server check and the HTTP client see one URL.
            try:
                target = parse_http_url(url, query=True)
            except BadUrl:
                if result.resources or pages:
                    result.notes.append("paging stopped: a next link is not a well-formed URL")
                else:
                    result.error = "the query is not a well-formed URL"
                break
            url = str(target)
            if not _same_server(target, origin):
                result.notes.append("paging stopped: a next link pointed outside the FHIR server")
                break
            if url in seen:
                result.notes.append("paging stopped: the next link repeated an earlier page")
                break
            if pages >= self._settings.fhir_max_pages:
                result.notes.append(f"paging stopped after {pages} pages")
                break
            seen.add(url)
            pages += 1
            body, error = self._get_json(base_url, url, token, deadline)
            result.requests_made += 1
            if error:
                if result.resources:  # a later page failed: keep what the earlier pages gave
                    result.notes.append(f"paging stopped: {error}")
                    break
                result.error = error
                return result
            url = self._collect(body, result)
            cap = self._settings.fhir_max_entries
            # Exactly `cap` entries and no further page is a complete answer, not a cut one.
            if len(result.resources) > cap or (url and len(result.resources) >= cap):
                del result.resources[cap:]
                result.notes.append(f"stopped reading after {cap} entries")
                break
        return result

    def _collect(self, body: dict, result: FetchResult) -> str | None:
        """Add the resources of one answer; the next page's URL, if any."""
        if body.get("resourceType") != "Bundle":
            result.resources.append(body)
            return None
        for entry in body.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
                result.resources.append(resource)
        return next_link(body)

    def _get_json(
        self, base_url: str, url: str, token: str | None, deadline: float
    ) -> tuple[dict, str | None]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {}, f"no answer within the deadline of {self._settings.fhir_deadline_s:g} s"
        timeout = (
            min(self._settings.fhir_connect_timeout_s, remaining),
            min(self._settings.fhir_read_timeout_s, remaining),
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.monotonic()
        try:
            with self._session(base_url).get(
                url, headers=headers, timeout=timeout, allow_redirects=False, stream=True
            ) as response:
                status = response.status_code
                raw = _read_capped(response, deadline)
        except requests.Timeout:
            metrics.fhir_request("timeout", started)
            return {}, "the FHIR server did not answer in time"
        except requests.ConnectionError:
            metrics.fhir_request("refused", started)
            return {}, "could not connect to the FHIR server"
        except requests.RequestException as exc:
            metrics.fhir_request("invalid", started)
            return {}, f"request failed ({type(exc).__name__})"
        finally:
            log.debug("fhir GET took %.1f ms", (time.monotonic() - started) * 1000)
        body = None if raw is None else _parse(raw)
        outcome = "http_error" if status >= 300 else "invalid" if body is None else "ok"
        if outcome == "ok" and body.get("resourceType") == "OperationOutcome":
            outcome = "invalid"  # an error answered as 200: no data
        metrics.fhir_request(outcome, started)
        if raw is None:
            return {}, f"answer larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MB"
        if status >= 300:
            detail = _outcome_text(body, token) if body else ""
            return {}, f"the FHIR server answered HTTP {status}" + (f": {detail}" if detail else "")
        if body is None:
            return {}, "the FHIR server's answer is not FHIR JSON"
        if body.get("resourceType") == "OperationOutcome":
            return {}, f"the FHIR server answered an OperationOutcome: {_outcome_text(body, token)}"
        return body, None


def next_link(bundle: dict) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _same_server(target: HttpUrl, origin: HttpUrl) -> bool:
    """Only URLs under the FHIR server's base (scheme, host, port and path) are followed; both
    passed the strict parser, so neither has dot segments. `/fhir-x` is not under `/fhir`."""
    base_path = origin.path.rstrip("/")
    path = target.path or "/"
    return (target.scheme, target.host, target.port) == (
        origin.scheme,
        origin.host,
        origin.port,
    ) and (path == base_path or path.startswith(base_path + "/"))


def _read_capped(response: requests.Response, deadline: float) -> bytes | None:
    """The body, or None beyond MAX_RESPONSE_BYTES; Timeout if it is not all read by `deadline`.

    Timeouts bound each socket read only: a server that drips its answer would hold this worker
    thread long after the request was answered. A watchdog shuts the socket at the deadline.
    """
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _interrupt, (response,))
    watchdog.daemon = True
    watchdog.start()
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(chunk_size=256 * 1024):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                return None
            chunks.append(chunk)
    except requests.RequestException:
        if time.monotonic() >= deadline:
            raise requests.Timeout() from None
        raise
    finally:
        watchdog.cancel()
    if time.monotonic() >= deadline:
        raise requests.Timeout()
    return b"".join(chunks)


def _interrupt(response: requests.Response) -> None:
    with contextlib.suppress(Exception):  # already finished or released: nothing to interrupt
        response.raw.shutdown()


def _parse(raw: bytes) -> dict | None:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) and isinstance(body.get("resourceType"), str) else None


def _outcome_text(outcome: dict, token: str | None) -> str:
    """What the client may learn of the FHIR server's OperationOutcome: its first issue's code,
    when it is a FHIR code. Its text is never echoed: it is the FHIR server's, may quote the
    access token in any letter case or encoding, or patient data."""
    for issue in outcome.get("issue") or []:
        code = issue.get("code") if isinstance(issue, dict) else None
        if isinstance(code, str) and _FHIR_CODE.fullmatch(code):
            return redact(f"issue code '{code}'", token)
    return ""


_FHIR_CODE = re.compile(r"[a-z][a-z-]{0,39}")


def redact(text: str, token: str | None) -> str:
    """`text` without the access token, in whatever letter case it appears."""
    if not token or not text:
        return text
    return re.sub(re.escape(token), "***", text, flags=re.IGNORECASE)
