#!/usr/bin/env python3
"""Prints the load-shapes benchmark's TSV as a markdown table, with each
mirror's req/s and CPU per request as ratios to nginx in the same run.

    shapes_report.py RESULTS.tsv

Rows: `FILE SHAPE SERVER req/s p50 p99 cpu-µs/request`, one per round; every
figure shown is the median over the rounds (the middle one of an odd count,
the lower middle of an even one, so it is always a measured value).
"""

import sys

LATENCY_UNITS = {"us": 1, "ms": 1000, "s": 1_000_000}


def micros(text):
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * LATENCY_UNITS[unit]
    raise ValueError(f"latency {text!r} has no unit")


def median(values):
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def main():
    rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
    runs = {}
    servers = []
    for file, shape, server, rps, _p50, p99, cpu in rows:
        runs.setdefault((file, shape, server), []).append((float(rps), micros(p99), float(cpu)))
        if server not in servers:
            servers.append(server)
    mirrors = [s for s in servers if s != "nginx"]
    rounds = max(len(v) for v in runs.values())
    print(f"### Hit path by load shape (median of {rounds} round(s))\n")
    head = "| file | shape | nginx req/s (p99, CPU µs) |"
    rule = "|---|---|---:|"
    for m in mirrors:
        head += f" {m} req/s (p99, CPU µs) | {m}/nginx req/s | {m}/nginx CPU |"
        rule += "---:|---:|---:|"
    print(head)
    print(rule)
    keys = []
    for file, shape, _ in runs:
        if (file, shape) not in keys:
            keys.append((file, shape))
    for file, shape in keys:
        figures = {}
        for server in servers:
            got = runs.get((file, shape, server))
            if got:
                figures[server] = tuple(median(column) for column in zip(*got))
        nginx = figures.get("nginx")
        line = f"| {file} | {shape} | {cell(nginx)} |"
        for m in mirrors:
            mine = figures.get(m)
            line += f" {cell(mine)} | {ratio(mine, nginx, 0)} | {ratio(mine, nginx, 2)} |"
        print(line)


def cell(figures):
    if not figures:
        return "-"
    rps, p99, cpu = figures
    thousands = f"{rps:,.0f}".replace(",", " ")
    return f"{thousands} ({p99 / 1000:.2f} ms, {cpu:.1f})"


def ratio(mine, nginx, column):
    if not mine or not nginx or nginx[column] == 0:
        return "-"
    return f"{mine[column] / nginx[column]:.2f}"


if __name__ == "__main__":
    main()
