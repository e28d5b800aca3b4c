"""`python -m bench`: the whole benchmark in one run; `--quick` is the smoke version.

Writes bench/results/results.json and PNG plots there, and prints a table. Medians of
`--repeats` runs; ratios are taken within this run, because the machine's load moves the
absolute numbers (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import run

DEFAULT_OUT = Path(__file__).parent / "results"


def measure(repeats: int, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    runs = [fn(*args, **kwargs) for _ in range(repeats)]
    summary: dict[str, Any] = {"runs": runs}
    for key, value in runs[0].items():
        if isinstance(value, float):
            summary[key] = run.median([r[key] for r in runs])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 100.0])
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.repeats, args.workers = 200, 1, [2]
        args.finished, args.backlog, args.seconds = 2000, 300, 3.0
    results = suite(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    if not args.quick:
        from bench.plots import draw

        draw(results, args.out)
    print(f"results in {args.out}")


def suite(args: argparse.Namespace) -> dict[str, Any]:
    concurrency = 64  # NOTIFIER_SEND_CONCURRENCY's default: the bare loop gets the same threads
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": dict(vars(args))}
    results["args"]["out"] = str(args.out)
    main_workers = 2 if 2 in args.workers else args.workers[0]
    with run.servers() as env:
        by_latency: dict[str, Any] = {}
        for latency in args.latencies:
            with run.stub(latency) as url:
                row: dict[str, Any] = {}
                row["bare"] = measure(
                    args.repeats, run.bare_throughput, url, jobs=args.jobs,
                    processes=main_workers, threads=concurrency,
                )  # fmt: skip
                for workers in args.workers:
                    row[f"pipeline_{workers}"] = measure(
                        args.repeats, run.pipeline_throughput, env, url, jobs=args.jobs,
                        workers=workers,
                    )  # fmt: skip
                main = row[f"pipeline_{main_workers}"]
                row["ratio"] = main["rate"] / row["bare"]["rate"]
                by_latency[str(int(latency))] = row
                print(f"latency {latency} ms: bare {row['bare']['rate']:.0f}/s, "
                      f"pipeline {main['rate']:.0f}/s ({row['ratio']:.2f})", flush=True)  # fmt: skip
        results["throughput"] = by_latency
        with run.stub(0) as url:
            results["latency"] = measure(
                args.repeats, run.steady_latency, env, url, rate=args.rate,
                seconds=args.seconds, workers=main_workers,
            )  # fmt: skip
        with run.stub(0) as url:
            run.seed_backlog_template(env, args.finished)
            fresh = measure(args.repeats, run.pipeline_throughput, env, url,
                            jobs=args.backlog, workers=main_workers)  # fmt: skip
            old = measure(args.repeats, run.pipeline_throughput, env, url,
                          jobs=args.backlog, workers=main_workers, backlog=True)  # fmt: skip
            results["backlog"] = {
                "finished_rows": args.finished, "in_flight": args.backlog,
                "fresh": fresh, "backlog": old, "ratio": old["rate"] / fresh["rate"],
            }  # fmt: skip
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| measurement | value |", "| --- | --- |"]
    for latency, row in results["throughput"].items():
        lines.append(
            f"| bare render+send, {latency} ms | {row['bare']['rate']:.0f}/s (CPU "
            f"{row['bare']['cpu_ms_per_notification']:.2f} ms per notification) |"
        )
        for key, value in row.items():
            if key.startswith("pipeline_"):
                lines.append(
                    f"| pipeline, {key.split('_')[1]} worker(s), {latency} ms | "
                    f"{value['rate']:.0f}/s (worker CPU {value['worker_cpu_ms_per_notification']:.2f}"
                    f" ms, PostgreSQL CPU {value['postgres_cpu_ms_per_notification']:.2f} ms "
                    f"per notification; answer → on record p50 {value['record_p50_ms']:.1f} ms, "
                    f"p99 {value['record_p99_ms']:.1f} ms) |"
                )
        lines.append(f"| pipeline / bare, {latency} ms | {row['ratio']:.2f} |")
    lat = results["latency"]
    lines.append(
        f"| enqueue → provider at {lat['runs'][0]['offered_rate']:.0f}/s | p50 "
        f"{lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms (answer → on record p50 "
        f"{lat['record_p50_ms']:.1f} ms, p99 {lat['record_p99_ms']:.1f} ms) |"
    )
    back = results["backlog"]
    lines.append(
        f"| {back['finished_rows']:,} finished rows + {back['in_flight']:,} in flight vs fresh | "
        f"{back['backlog']['rate']:.0f}/s vs {back['fresh']['rate']:.0f}/s ({back['ratio']:.2f}) |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
