"""``python -m tests.chaos [--tasks N] [--scenarios F1,F2] [--reduced] [--json PATH]`` (``./dev chaos``).

Prints one accounting row per scenario variant. Exit status 0 when every fault row passes
(lost 0, both 0, duplicate dead letters 0, duplicate side effects of idempotent tasks 0) and
every negative control reports a loss or a duplicate; 1 otherwise (also when a variant could
not exercise its fault: verdict ERROR).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.accounting import dump
from tests.chaos.harness import harness
from tests.chaos.scenarios import BY_ID, FAST, SCENARIOS, run_scenario

COLUMNS = [("scenario", 4), ("variant", 14), ("attempted", 9), ("succeeded", 9), ("dead_lettered", 13),
           ("lost", 5), ("both", 5), ("duplicate_dead_letters", 8), ("duplicate_effects", 8),
           ("duplicate_effects_not_idempotent", 8), ("seconds", 7), ("verdict", 11)]
HEADERS = {"dead_lettered": "dead-lettered", "duplicate_dead_letters": "dup DL", "duplicate_effects": "dup SE",
           "duplicate_effects_not_idempotent": "dup SE*", "seconds": "secs"}


def table(rows: list) -> str:  # type: ignore[type-arg]
    head = " | ".join(HEADERS.get(c, c).ljust(w) for c, w in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        values = row.as_dict()
        lines.append(" | ".join(str(values[c]).ljust(w) for c, w in COLUMNS))
    return "\n".join(lines)


def markdown(rows: list) -> str:  # type: ignore[type-arg]
    cols = [c for c, _ in COLUMNS] + ["control", "reasons", "notes"]
    out = ["| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |", "|" + " --- |" * len(cols)]
    for row in rows:
        values = row.as_dict()
        values["reasons"] = ", ".join(f"{k} {v}" for k, v in values["reasons"].items())
        out.append("| " + " | ".join(str(values[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(out)


def machine() -> dict[str, str]:
    free = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip() if shutil.which("free") else ""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": str(os.cpu_count()), "free": free,
            "platform": platform.platform(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per scenario variant (default 2000)")
    parser.add_argument("--scenarios", default="", help="comma-separated ids (default: all; --reduced: the fast ones)")
    parser.add_argument("--reduced", action="store_true", help="the fast scenarios, shorter faults")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the rows (and the machine) as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    parser.add_argument("--workdir", type=Path, help="where our Postgres/Redis/logs live (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) afterwards")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_ENV", "development")  # the harness' processes: demo-free development settings

    ids = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()] or \
        (FAST if args.reduced else [s.id for s in SCENARIOS])
    unknown = [i for i in ids if i not in BY_ID]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(BY_ID)}")
    base = Path(__file__).resolve().parents[2] / ".data"
    base.mkdir(exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-", dir=base))
    meta = {**machine(), "tasks_per_variant": str(args.tasks), "seed": str(args.seed),
            "reduced": str(args.reduced), "workdir": str(workdir)}
    print(f"[chaos] {args.tasks} tasks per variant, scenarios {','.join(ids)}; work dir {workdir}", file=sys.stderr)
    rows = []
    started = time.monotonic()
    try:
        with harness(workdir, seed=args.seed, concurrency=args.concurrency) as h:
            for sid in ids:
                print(f"[chaos] {sid}: {BY_ID[sid].title}", file=sys.stderr, flush=True)
                for row in run_scenario(h, BY_ID[sid], args.tasks, reduced=args.reduced):
                    rows.append(row)
                    print(f"[chaos]   {row.variant}: {row.as_dict()}", file=sys.stderr, flush=True)
                    if args.json:
                        dump(rows, args.json, meta)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["total_seconds"] = f"{time.monotonic() - started:.0f}"
    if args.json:
        dump(rows, args.json, meta)
    if args.markdown:
        args.markdown.write_text(markdown(rows) + "\n")
    print(table(rows))
    for row in rows:
        if row.notes and row.expect != "not_covered":
            print(f"{row.scenario} {row.variant}: {row.notes}")
    print("dup DL: duplicate dead letters; dup SE: duplicate side effects of idempotent tasks; "
          "dup SE*: of tasks not declared idempotent (at-least-once delivery, informational)")
    bad = [r for r in rows if r.verdict in ("FAIL", "MISSED", "ERROR")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
