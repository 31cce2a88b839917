#!/usr/bin/env python3
"""Prints the cluster benchmark's TSV as markdown tables with the ratios.

    cluster_report.py RESULTS.tsv

Rows: `hit SETUP FILE SHAPE req/s p50-µs p99-µs mirror-CPU-µs/req PG+Garage-CPU-µs/req`,
`fill SERIES CLIENTS wall-s MB/s upstream-GETs mirror-CPU-s PG+Garage-CPU-s`,
`streams N seconds MB/s`, `rss REPLICA baseline-KiB peak-KiB`, `blob NAME bytes`.
"""

import statistics
import sys


def ratio(a, b):
    try:
        return f"{float(a) / float(b):.2f}"
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"


def latency(us):
    us = float(us)
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def size(n):
    n = int(n)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def main():
    rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
    blobs = {r[1]: size(r[2]) for r in rows if r[0] == "blob"}
    big, tiny = blobs.get("big", "big"), blobs.get("tiny", "tiny")
    # Rounds: each figure's median over them, in the order first measured.
    rounds = {}
    for r in rows:
        if r[0] == "hit":
            rounds.setdefault((r[1], r[2], r[3]), []).append(r[4:])
    hits = [
        ["hit", *key, *(f"{statistics.median(float(v[i]) for v in runs):g}" for i in range(5))]
        for key, runs in rounds.items()
    ]
    hits.sort(key=lambda r: (r[2], r[3]))
    by = {(r[1], r[2], r[3]): r for r in hits}
    n_rounds = max((len(v) for v in rounds.values()), default=0)

    print(f"### Hits of a {tiny} blob and a manifest by tag: 1 node vs 1 and 3 replicas")
    print(f"(wrk -t1 -c16 each, TLS 1.3 AES-128-GCM; medians of {n_rounds} interleaved rounds)\n")
    print(
        "| file | setup | load | req/s | p50 / p99 (worst wrk) | server CPU µs/req "
        "| PG+Garage µs/req | req/s vs nginx | CPU vs nginx | CPU vs single node |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in hits:
        _, setup, file, shape, rps, p50, p99, cpu, backing = r
        nginx = by.get(("nginx", file, shape))
        single = by.get(("single node", file, shape))
        print(
            f"| {file} | {setup} | {shape} | {rps} | {latency(p50)} / {latency(p99)} | {cpu} | {backing} "
            f"| {ratio(rps, nginx[4] if nginx else None)} | {ratio(cpu, nginx[7] if nginx else None)} "
            f"| {ratio(cpu, single[7] if single else None)} |"
        )
    print(
        "\nAll servers share one core (SERVER_CORE), the wrks the other: 3 replicas cannot scale here, "
        "the figure is the CPU per request, summed over the replicas."
    )

    fills = [r for r in rows if r[0] == "fill"]
    if fills:
        direct = next((r for r in fills if r[1] == "direct"), None)
        print(f"\n### Cold fill of a {big} blob (every body hashed by its client)\n")
        print("| series | clients | wall s (last body) | MB/s | upstream GETs | mirror CPU-s | PG+Garage CPU-s | wall vs direct |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in fills:
            _, series, clients, wall, mbps, gets, cpu, backing = r
            cpu_shown = f"{cpu} (registry)" if series == "direct" else cpu
            print(
                f"| {series} | {clients} | {wall} | {mbps} | {gets} | {cpu_shown} | {backing} "
                f"| {ratio(wall, direct[3] if direct else None)} |"
            )

    streams = [r for r in rows if r[0] == "streams"]
    rss = [r for r in rows if r[0] == "rss"]
    if rss:
        s = streams[0] if streams else None
        title = f"{s[1]} streams of the cached {big} blob, {s[2]} s, {s[3]} MB/s in all" if s else "streams"
        print(f"\n### RSS per replica during {title}\n")
        print("| replica | RSS before KiB | peak RSS (VmHWM) KiB | growth KiB |")
        print("|---|---:|---:|---:|")
        for _, name, before, peak in rss:
            print(f"| {name} | {before} | {peak} | {int(peak) - int(before)} |")


if __name__ == "__main__":
    main()
