"""Coverage-guided fuzzing with atheris (issue 13, point 9), bounded for CI.

Each target of tests/fuzz/fuzz_service.py (the request validation, the chart builder through
the whole engine, the note reader) runs for FUZZ_S seconds from the seed corpus under
tests/fuzz/corpus/, in its own subprocess (a crash cannot take pytest down), the three at
once. A run fails on any exception but the domain errors and on any input slower than one
second. What a failing run found is written to the run's folder (named in the failure):
keep it under tests/fuzz/findings/TARGET/ with the fix, and it is replayed below ever after.

CDS_FUZZ_SECONDS lengthens (or shortens) the runs; the corpus a run grows stays in the
temporary folder (copy it into tests/fuzz/corpus/TARGET/ to keep it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).parent / "fuzz"
HARNESS = FUZZ / "fuzz_service.py"
TARGETS = ("request", "chart", "notes")
FUZZ_S = int(os.environ.get("CDS_FUZZ_SECONDS", "20"))


def _options(target: str, folder: Path) -> list[str]:
    options = [
        f"-max_total_time={FUZZ_S}",
        "-timeout=10",  # libFuzzer's own stop for a hung input; the harness fails at 1 s
        "-max_len=4096",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={folder}/",
        "-print_final_stats=1",
    ]
    if target == "request":
        options.append(f"-dict={FUZZ / 'json.dict'}")
    return options


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three fuzzing runs, started together: target -> (process, folder, log)."""
    started = {}
    for target in TARGETS:
        folder = tmp_path_factory.mktemp(f"fuzz-{target}")
        corpus = folder / "corpus"
        seeds = FUZZ / "corpus" / target  # git keeps no empty folder: a target may have none
        if seeds.is_dir():
            shutil.copytree(seeds, corpus)
        else:
            corpus.mkdir()
        log = folder / "fuzz.log"
        process = subprocess.Popen(
            [sys.executable, str(HARNESS), target, *_options(target, folder), str(corpus)],
            stdout=open(log, "w"),  # noqa: SIM115 - closed when the process ends
            stderr=subprocess.STDOUT,
        )
        started[target] = (process, folder, log)
    yield started
    for process, _, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("target", TARGETS)
def test_fuzzing_finds_nothing(runs, target):
    process, folder, log = runs[target]
    try:
        code = process.wait(FUZZ_S + 120)
    except subprocess.TimeoutExpired:
        process.kill()
        code = "timeout"
    text = log.read_text(errors="replace")
    found = sorted(p.name for p in folder.iterdir() if p.name.startswith(("crash-", "timeout-")))
    assert code == 0 and not found, (
        f"atheris {target}: exit {code}; inputs kept in {folder}: {found}\n{text[-3000:]}"
    )
    assert "Done " in text  # it ran to its time limit, not stopped early


def test_findings_and_corpus_replay_within_a_second_each():
    """Every kept finding (and seed) once through its target: no exception, none slow."""
    files = sorted(
        p
        for kind in ("findings", "corpus")
        for p in (FUZZ / kind).glob("*/*")
        if p.is_file() and not p.name.startswith(".")
    )
    assert any(p.parent.parent.name == "findings" for p in files)
    result = subprocess.run(
        [sys.executable, str(HARNESS), "replay", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
