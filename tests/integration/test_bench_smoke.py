"""A smoke run of the benchmark (bench/): its harness works end to end, and in it every job
ends `sent` after exactly one provider request. A correctness check, not a timing assertion."""

from __future__ import annotations

from bench import run


def test_benchmark_smoke_run_sends_every_job_exactly_once() -> None:
    with run.servers() as env, run.stub(0) as url:
        bare = run.bare_throughput(url, jobs=40, processes=1, threads=8)
        result = run.pipeline_throughput(env, url, jobs=60, workers=1)  # verify() raises on
        # a job not sent, a second request for one job, or a spec violation
        stats = run.stub_stats(url)

    assert bare["jobs"] == 40 and bare["rate"] > 0
    assert result["jobs"] == 60 and result["rate"] > 0
    assert stats["count"] == 60 and all(len(t) == 1 for t in stats["arrivals"].values())
    assert result["postgres_cpu_ms_per_notification"] > 0
