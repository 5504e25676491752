"""Sustained mixed load on the scoring API against a real server on 127.0.0.1: no errors, flat memory.

    .venv/bin/python benchmarks/load.py                      # trains into a temp home first (about 3 min)
    .venv/bin/python benchmarks/load.py --home /path         # that home's @champion and snapshot (or ADVOCACY_HOME)
    .venv/bin/python benchmarks/load.py --seconds 120        # shorter than the default 10 minutes

Offers `--rate` requests per second (default 100) of mixed traffic for `--seconds` (default 600),
at most `--requests`: 70% `POST /score` with one to five ids, 20% `POST /explain`, 10% `POST /asks`
with a new, unique ask_id for a known customer. The load is open-loop: request i is sent at
start + i / rate whether or not earlier ones were answered (up to `--max-outstanding` in flight; a
request past that cap is not sent and counts as an error), so a slow server shows up as latency
and errors, never as a lower offered rate. Latency runs from the time a request was due, so the
client's own delays count against it too.

Prints requests sent, errors by kind (non-2xx status or transport error), achieved req/s, p50/p99
latency overall and per route, and the resident memory (RSS) of the server's whole process tree
(arbiter and workers), sampled every 10 s, then PASS/FAIL for the goals: no errors, and flat memory.
Memory is flat when the RSS at the end exceeds the RSS after the warm-up (the first 30 s, or a
quarter of a shorter run) by less than FLAT_GROWTH_FRACTION of it and less than FLAT_GROWTH_BYTES:
start-up growth (caches filling, lazy imports) is expected; growth after it under steady load is a leak.

The script gives the server a fresh ask log in a temp folder (unless ADVOCACY_ASK_LOG is set), so
the asks it posts never land in the home's own log, and checks afterwards that every acknowledged
ask is in it. The client is one asyncio loop on a few kept-alive connections, with a minimal HTTP/1.1
client of its own (a tenth of httpx's CPU per request), so that it leaves the server the machine's
cores; it prints its own CPU use so that can be checked.
The load, its client and the report are `tests/loadkit.py`'s (`run_load`), which `tests/test_load.py`
runs for one minute.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this folder comes first on sys.path, where benchmarks/features.py would shadow the
# `features` package: look up the project's packages (and `benchmarks.api`, `tests.loadkit`) from the root instead.
if __name__ == "__main__":
    sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from tests.loadkit import MAX_OUTSTANDING, MB, MIX, run_load  # noqa: E402 (after the path fix above)


def tree_rss(pid: int) -> str:
    """Resident memory of each process of a server's tree ("arbiter 275 MB, worker 441 MB, ..."), to see which grows."""
    import psutil

    root = psutil.Process(pid)
    parts = []
    for p in [root, *root.children(recursive=True)]:
        try:
            name = "arbiter" if p.pid == pid else "worker" if "worker" in " ".join(p.cmdline()) else "process"
            parts.append(f"{name} {p.pid} {p.memory_info().rss / MB:.0f} MB")
        except psutil.Error:
            continue
    return ", ".join(parts)


def _mix(text: str) -> dict[str, float]:
    """`score=70,explain=20,asks=10` -> {"/score": 0.7, ...} (shares need not add up to 100)."""
    parts = dict(item.split("=", 1) for item in text.split(","))
    if not parts or set(parts) - {r.lstrip("/") for r in MIX}:
        raise argparse.ArgumentTypeError(f"routes are {', '.join(r.lstrip('/') for r in MIX)}")
    weights = {f"/{route}": float(share) for route, share in parts.items() if float(share) > 0}
    return {route: w / sum(weights.values()) for route, w in weights.items()}


def main() -> None:
    from benchmarks.api import customer_ids, prepare_home, start_server
    from features.contracts import CONTRACTS
    from storage.asklog import AskLog
    from tests.serverkit import free_port, stop_server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=os.environ.get("ADVOCACY_HOME"), help="project home to serve")
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to offer load (default 10 minutes)")
    parser.add_argument("--rate", type=float, default=100.0, help="offered requests per second")
    parser.add_argument("--requests", type=int, default=None, help="request bound (default rate x seconds)")
    parser.add_argument("--max-outstanding", type=int, default=MAX_OUTSTANDING, help="cap on requests in flight")
    parser.add_argument("--mix", type=_mix, default=MIX, help="route shares, e.g. score=70,explain=20,asks=10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (ADVOCACY_WORKERS)")
    args = parser.parse_args()
    os.environ["ADVOCACY_WORKERS"] = str(args.workers)  # the server inherits this environment

    home = prepare_home(Path(args.home) if args.home else None)
    ids = customer_ids(home)
    folder = Path(tempfile.mkdtemp(prefix="advocacy-load-"))
    # start_server passes this process's environment on: a fresh ask log keeps the load out of the home's.
    os.environ.setdefault("ADVOCACY_ASK_LOG", str(folder / "asks.sqlite"))
    ask_log = Path(os.environ["ADVOCACY_ASK_LOG"])
    port = free_port()
    log = folder / "server.log"
    print(f"serving {home} on 127.0.0.1:{port} (log: {log}, ask log: {ask_log}), {os.cpu_count()} CPUs", flush=True)
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    proc = start_server(home, port, log)
    try:
        print(f"offering {args.rate:.0f} req/s for {args.seconds:.0f} s, mix {args.mix}", flush=True)
        print(f"server processes at start: {tree_rss(proc.pid)}", flush=True)
        report = run_load(
            f"http://127.0.0.1:{port}",
            ids,
            args.rate,
            args.seconds,
            proc.pid,
            max_requests=args.requests,
            max_outstanding=args.max_outstanding,
            mix=args.mix,
            seed=args.seed,
            log=lambda line: print(line, flush=True),
        )
        print(f"server processes at the end: {tree_rss(proc.pid)}", flush=True)
    finally:
        stop_server(proc)
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    print("\n".join(report.lines()))
    stored = set(AskLog(ask_log, CONTRACTS["asks"]).read()["ask_id"])
    missing = [a for a in report.acked_asks if a not in stored]
    print(
        f"{'PASS' if not missing else 'FAIL'}: acknowledged asks in the ask log "
        f"{len(report.acked_asks) - len(missing)}/{len(report.acked_asks)}"
    )
    sys.exit(0 if report.passed and not missing else 1)


if __name__ == "__main__":
    main()
