"""``python -m bench.run [--quick|--tiny] [--scenarios S1,S4] [--repeat 3] [--json PATH]``

Runs each scenario against our code and its plain-Celery/Django baseline in the same run, on
the same Postgres and Redis, and prints a Markdown table (median and min–max over the
repeats, the ratio ours/baseline, the goal and whether it is met). Benchmarks are not tests:
the exit status is 0 whatever the numbers, unless a scenario crashes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Row, Services, fmt, redis, spread, sql


def machine() -> dict[str, Any]:
    import celery
    import django
    import kombu
    import redis as redis_py

    mem = ""
    try:
        mem = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout.splitlines()[1]
        mem = " ".join(mem.split()[1:2])
    except (OSError, IndexError):
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cores": os.cpu_count(),
        "memory": mem,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis-py": redis_py.__version__,
        "postgres": sql("SHOW server_version")[0][0],
        "redis": redis().info("server")["redis_version"],
    }


def table(rows: list[Row]) -> str:
    lines = ["| id | figure | unit | ours | baseline | ratio | goal | met |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "—"}[r.met]
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        lines.append(f"| {r.scenario} | {r.metric} | {r.unit} | {spread(r.ours)} | {spread(r.baseline) or '—'} "
                     f"| {ratio} | {r.goal} | {met} |")
    notes = [f"- {r.scenario} {r.metric}: {r.notes}" for r in rows if r.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    # The bench runs the demo-free project as in development (its own database, no secrets);
    # ./dev sets this too.
    os.environ.setdefault("DJANGO_ENV", "development")
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[1])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes (S5 at 50k rows)")
    size.add_argument("--tiny", action="store_true", help="each scenario once at a tiny size (the smoke test)")
    parser.add_argument("--scenarios", default="S1,S2,S3,S4,S5,S6,S7,S8", help="comma-separated ids")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per figure (default 3; 1 with --tiny)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the machine as JSON")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    services = Services()
    services.start()
    from bench.scenarios import FULL, QUICK, SCENARIOS, TINY

    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    repeat = args.repeat or (1 if args.tiny else 3)
    wanted = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    rows: list[Row] = []
    errors: dict[str, str] = {}
    try:
        info = machine()
        mode = "tiny" if args.tiny else "quick" if args.quick else "full"
        print(f"[bench] {mode} sizes, {repeat} repeat(s): {sizes}", file=sys.stderr)
        for sid in wanted:
            t0 = time.monotonic()
            print(f"[bench] {sid} ...", file=sys.stderr, flush=True)
            try:
                got = SCENARIOS[sid](sizes, repeat)
            except Exception:
                errors[sid] = traceback.format_exc()
                print(f"[bench] {sid} crashed:\n{errors[sid]}", file=sys.stderr)
                continue
            rows.extend(got)
            print(f"[bench] {sid} done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
            for r in got:
                print(f"[bench]   {r.metric}: ours {spread(r.ours)} baseline {spread(r.baseline) or '—'} "
                      f"ratio {fmt(r.ratio)} met={r.met}", file=sys.stderr, flush=True)
        info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        header = (f"{info['date']}; {mode} sizes, {repeat} repeats; {info['cores']} cores, {info['memory']} RAM; "
                  f"load {info['loadavg']} → {info['load_after']}; Python {info['python']}, Django {info['django']}, "
                  f"Celery {info['celery']}, kombu {info['kombu']}, Postgres {info['postgres']}, Redis {info['redis']}")
        print(f"\n{header}\n\n{table(rows)}\n")
        if args.json:
            args.json.write_text(json.dumps({"machine": info, "mode": mode, "repeat": repeat,
                                             "rows": [r.as_dict() for r in rows], "errors": errors}, indent=2))
    finally:
        services.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
