"""PNG plots of a results.json (matplotlib: `pip install -e '.[bench]'`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(results: dict[str, Any], out: Path) -> None:
    throughput = results["throughput"]
    latencies = sorted(throughput, key=float)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([float(x) for x in latencies], [throughput[x]["bare"]["rate"] for x in latencies],
            "o--", label="bare render+send")  # fmt: skip
    workers = sorted({int(k.split("_")[1]) for row in throughput.values() for k in row
                      if k.startswith("pipeline_")})  # fmt: skip
    for n in workers:
        ax.plot([float(x) for x in latencies],
                [throughput[x][f"pipeline_{n}"]["rate"] for x in latencies],
                "o-", label=f"pipeline, {n} worker(s)")  # fmt: skip
    ax.set(xlabel="provider latency (ms)", ylabel="delivered / s", title="Throughput vs latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput_vs_latency.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for latency in latencies:
        ax.plot(workers, [throughput[latency][f"pipeline_{n}"]["rate"] for n in workers], "o-",
                label=f"{latency} ms provider")  # fmt: skip
    ax.set(xlabel="worker processes", ylabel="delivered / s", xticks=workers,
           title="Throughput vs worker processes")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput_vs_workers.png", dpi=100)
    plt.close(fig)

    lat = results["latency"]
    fig, ax = plt.subplots(figsize=(6, 4))
    names = ["p50_ms", "p90_ms", "p99_ms", "max_ms"]
    ax.bar([n[:-3] for n in names], [lat[n] for n in names])
    ax.set(ylabel="enqueue → provider request (ms)",
           title=f"Latency at a steady {lat['runs'][0]['offered_rate']:.0f}/s")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "latency_percentiles.png", dpi=100)
    plt.close(fig)
