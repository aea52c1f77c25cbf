"""Served A/B: two (or more) source trees of the service, side by side, by worker CPU per request.

    .venv/bin/python bench/ab.py [--auth none|ES384|RS384] [--stores embedded|server]
        [--seconds 6] [--rounds 2] before=/path/to/old/tree after=. [ceiling=.]

Each tree is served in turn by `cds-service serve` (2 gevent workers) run from that tree
(PYTHONPATH), the typical request driven by wrk at 8 connections, round after round so that
the machine's other load falls on every tree alike. Prints req/s, p50, p99 and the CPU time of
the workers (utime + stime from /proc) per request answered: on a shared machine req/s and p99
move with the load, CPU per request barely does. `--stores server` gives each tree a fresh
PostgreSQL database and Redis key prefix (bench/scale.py's server_stores). A tree is a checkout
of the repository, e.g. `git archive <commit> | tar -x -C /tmp/old`. A tree named `ceiling...` is
served by its bench/ceiling.py instead (the framework ceiling, the same gunicorn settings), so
the ratio to the ceiling is measured in the same rounds as the trees. Each line also gives,
per request, the workers' time on a CPU, their time runnable but waiting for one (the run
queue, from /proc/PID/task/*/schedstat) and how often they were preempted: on this 2-core
machine that wait, not the service's work, is most of p50 and p99.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from run import ISSUER, NOW, SERVICE_ID, TYPICAL, run_wrk, sign_tokens  # noqa: E402
from servers import free_port, stop, wait_until_up  # noqa: E402

from cds_service.keys import make_key_pair  # noqa: E402

SERVE = "import sys; from cds_service.cli import main; sys.exit(main())"
TOKENS_PER_SECOND = 3000  # more than the service answers: a token is good for one call


def _workers(master_pid: int) -> list[str]:
    return subprocess.run(
        ["pgrep", "-P", str(master_pid)], capture_output=True, text=True
    ).stdout.split()


def worker_cpu_s(master_pid: int) -> float:
    ticks = 0
    for pid in _workers(master_pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_sched(master_pid: int) -> tuple[float, float, int]:
    """The workers' threads, summed: seconds on a CPU, seconds runnable but waiting for one
    (the run queue: the machine's other load, wrk among it, in front of them), and how often
    they were preempted (involuntary context switches). The run-queue wait is the part of the
    latency that is not the service's own work (see bench/profile.md, fourth round)."""
    run = wait = preempted = 0
    gone = (FileNotFoundError, ProcessLookupError)  # a worker or thread that just ended
    for pid in _workers(master_pid):
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except gone:
            continue
        for task in tasks:
            with contextlib.suppress(*gone):
                on_cpu, queued, _slices = (task / "schedstat").read_text().split()
                run, wait = run + int(on_cpu), wait + int(queued)
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("nonvoluntary_ctxt_switches:"):
                        preempted += int(line.split()[1])
    return run / 1e9, wait / 1e9, preempted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auth", default="none", choices=["none", "ES384", "RS384"])
    parser.add_argument("--stores", default="embedded", choices=["embedded", "server"])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("trees", nargs="+", help="name=path of a source tree")
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.trees]
    work = Path(tempfile.mkdtemp(prefix="cds-ab-"))
    body = work / "typical.json"
    body.write_bytes(TYPICAL.read_bytes())
    env = {"CDS_FIXED_NOW": NOW, "CDS_LOG_LEVEL": "WARNING"}
    signed: list[str] = []
    if args.auth != "none":
        kid = make_key_pair(work / "keys", args.auth, "ab")
        jwks = json.loads((work / "keys" / "jwks.json").read_text())
        issuer = {"iss": f"{ISSUER}/{args.auth.lower()}", "jwks": jwks}
        (work / "trust.json").write_text(json.dumps({"issuers": [issuer]}))
        env["CDS_TRUST_CONFIG"] = str(work / "trust.json")
        env["CDS_PUBLIC_BASE_URL"] = "https://cds.ab.local"
        count = args.seconds * TOKENS_PER_SECOND * args.rounds * len(trees)
        aud = f"https://cds.ab.local/cds-services/{SERVICE_ID}"
        signed = sign_tokens(work / "keys", kid, aud, count, args.auth)
    with contextlib.ExitStack() as stack:
        served = {}
        for name, path in trees:
            tree_env = {**env, "CDS_DATA_DIR": str(work / f"data-{name}")}
            tree_env["PYTHONPATH"] = str(Path(path).resolve())
            if args.stores == "server":
                from scale import server_stores

                tree_env.update(stack.enter_context(server_stores(work / f"migrate-{name}")))
            port = free_port()
            if name.startswith("ceiling"):
                ceiling = str(Path(path).resolve() / "bench" / "ceiling.py")
                command = [sys.executable, ceiling, "--port", str(port), "--workers", "2"]
            else:
                command = [sys.executable, "-c", SERVE, "serve", "--port", str(port)]
                command += ["--workers", "2"] + (["--no-auth"] if args.auth == "none" else [])
            log = work / f"{name}.log"
            process = subprocess.Popen(
                command,
                cwd=work,
                env={**os.environ, **tree_env},
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
            )
            stack.callback(stop, process)
            wait_until_up(f"http://127.0.0.1:{port}/health", process, log, seconds=60)
            served[name] = (process, f"http://127.0.0.1:{port}/cds-services/{SERVICE_ID}")
            if args.auth == "none" or name.startswith("ceiling"):
                run_wrk(served[name][1], body, None, 2)  # warm up
        used = 0
        for round_ in range(args.rounds):
            for name, (process, url) in served.items():
                tokens = None
                if signed:
                    tokens = work / f"tokens-{round_}-{name}"
                    share = signed[used : used + args.seconds * TOKENS_PER_SECOND]
                    tokens.write_text("\n".join(share) + "\n")
                    used += len(share)
                before, sched_before = worker_cpu_s(process.pid), worker_sched(process.pid)
                result = run_wrk(url, body, tokens, args.seconds)
                answered = max(1, result["requests"])
                cpu_ms = (worker_cpu_s(process.pid) - before) * 1000 / answered
                run_s, wait_s, preempted = (
                    after - first
                    for after, first in zip(worker_sched(process.pid), sched_before, strict=True)
                )
                print(
                    f"{name:>10} round {round_}: {result['rps']:7.0f} req/s, "
                    f"p50 {result['p50_ms']:6.2f} ms, p99 {result['p99_ms']:7.2f} ms, "
                    f"CPU {cpu_ms:.3f} ms/request, errors {result['errors']}, "
                    f"non-2xx {result['non2xx']}, load {os.getloadavg()[0]:.1f}; "
                    f"per request: run {run_s * 1000 / answered:.3f} ms, "
                    f"run-queue wait {wait_s * 1000 / answered:.3f} ms, "
                    f"preempted {preempted / answered:.2f} times",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
