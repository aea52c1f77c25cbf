"""Coverage-guided fuzzing (atheris, libFuzzer) of what reads untrusted input.

    python tests/fuzz/fuzz_service.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of:
- `request`: any bytes as a hook request body: JSON, then the tolerant pass and the request
  and context schemas of a service (issue 13, point 9: the request validation);
- `chart`: an example request of fhir_examples/scenarios, with values at fuzzer-chosen places
  replaced by fuzzer-chosen values, through the whole engine (validation, gathering from the
  prefetch, the chart builder, the rules and the cards), the FHIR server never called;
- `notes`: any text through the note reader (read_note, read_name, context).

Anything but the domain errors (CdsError: the 4xx the service answers; ValueError from JSON
and from `notes.context`'s documented refusals) is a finding, and so is any input that takes
more than SLOW_S seconds. tests/test_fuzz_atheris.py runs each target for a bounded time in
a subprocess; a finding's input is kept under tests/fuzz/findings/TARGET/ and replayed there.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["cds_service"]):
    from cds_service import engine as engine_module
    from cds_service import notes
    from cds_service.errors import CdsError
    from cds_service.services import SERVICES
    from cds_service.settings import Settings
    from cds_service.tolerant import tolerate

ROOT = Path(__file__).resolve().parents[2]
SLOW_S = 1.0
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
SCENARIOS = sorted((ROOT / "fhir_examples" / "scenarios").glob("*.request.json"))
SERVICE_LIST = list(SERVICES.values()) if isinstance(SERVICES, dict) else list(SERVICES)
_ENGINE = None


class SlowInput(Exception):
    """An input took longer than SLOW_S."""


def engine():
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = engine_module.Engine(Settings.from_env({}))
    return _ENGINE


def _never(url: str) -> bool:
    return False  # the FHIR server is never called: the fuzzer fuzzes us, not the network


def request_target(data: bytes) -> None:
    if not data:
        return
    service = SERVICE_LIST[data[0] % len(SERVICE_LIST)]
    try:
        body = json.loads(data[1:])
    except (ValueError, RecursionError):  # not JSON: the service answers 400 before this
        return
    with contextlib.suppress(CdsError):
        tolerate(body, service.prefetch)
        engine_module.validate_request(service, body)


VALUES = [None, True, 0, -1, 1.5e308, "", "x", [], {}, "2026-11-20", "Patient/p", "%"]


def _mutate(node, fdp: atheris.FuzzedDataProvider, depth: int = 0):
    """The node with one value somewhere in it replaced (the place and value chosen by the
    fuzzer): a dict key's value, a list item, or this node itself."""
    choice = fdp.ConsumeIntInRange(0, 9)
    if choice == 0 or depth > 12 or not isinstance(node, dict | list) or not node:
        kind = fdp.ConsumeIntInRange(0, 5)
        if kind == 0:
            return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
        if kind == 1:
            return fdp.ConsumeInt(8)
        if kind == 2:
            return fdp.ConsumeFloat()
        if kind == 3:
            return [node]
        if kind == 4:
            return {fdp.ConsumeUnicodeNoSurrogates(8): node}
        return VALUES[fdp.ConsumeIntInRange(0, len(VALUES) - 1)]
    if isinstance(node, dict):
        keys = sorted(node)
        key = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
        node[key] = _mutate(node[key], fdp, depth + 1)
    else:
        index = fdp.ConsumeIntInRange(0, len(node) - 1)
        node[index] = _mutate(node[index], fdp, depth + 1)
    return node


_SEEDS: dict[Path, str] = {}


def chart_target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    path = SCENARIOS[fdp.ConsumeIntInRange(0, len(SCENARIOS) - 1)]
    if path not in _SEEDS:
        _SEEDS[path] = path.read_text()
    body = json.loads(_SEEDS[path])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        body = _mutate(body, fdp)
    hook = body.get("hook") if isinstance(body, dict) else None
    service = next((s for s in SERVICE_LIST if s.hook == hook), SERVICE_LIST[0])
    with contextlib.suppress(CdsError):
        engine().evaluate(service, body, NOW, _never)


def notes_target(data: bytes) -> None:
    text = data.decode("utf-8", "replace")  # the service decodes a note's bytes as UTF-8
    notes.read_note(text)
    notes.read_name(text)
    # ValueError: the phrase is not in the text, or not within one sentence
    with contextlib.suppress(ValueError):
        notes.context(text, "cramps")


TARGETS = {"request": request_target, "chart": chart_target, "notes": notes_target}


def timed(target):
    def run(data: bytes) -> None:
        took = _seconds(target, data)
        if took > SLOW_S:
            # A slow path is slow every time; a pause of the process is not (a full garbage
            # collection over the fuzzer's heap of several hundred MB, the machine's other
            # load: seen once in CI under load, 1.17 s on 119 bytes of note text).
            took = min(took, _seconds(target, data))
            if took > SLOW_S:
                raise SlowInput(f"{took:.2f} s on {len(data)} bytes, twice")

    return run


def _seconds(target, data: bytes) -> float:
    start = time.perf_counter()
    target(data)
    return time.perf_counter() - start


def main() -> None:
    name = sys.argv.pop(1)
    if name == "replay":  # replay FILE...: each input once, through its folder's target
        for target in TARGETS.values():
            target(b"")  # loading, not timed
        for file in sys.argv[1:]:
            path = Path(file)
            timed(TARGETS[path.parent.name])(path.read_bytes())
        return
    target = timed(TARGETS[name])
    target(b"")  # load the lexicon, the terminology and the card content before timing
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
