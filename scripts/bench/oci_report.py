#!/usr/bin/env python3
"""Prints the OCI benchmark's TSV as markdown tables with the ratios.

    oci_report.py RESULTS.tsv

Rows: `rps SCENARIO AUTH SERVER req/s p50 p99 cpu-µs/request`,
`stream SCENARIO AUTH SERVER MB/s CPU-s/GB peak-RSS-MiB`,
`fill SCENARIO AUTH SERVER wall-s MB/s server-CPU-s`.
"""

import sys

SERVERS = ["nginx", "docker-registry", "mirror"]


def ratio(a, b):
    try:
        return f"{float(a) / float(b):.2f}"
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"


def main():
    rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
    streams = [r for r in rows if r[0] == "stream"]
    rps = {(r[1], r[2], r[3]): r[4:] for r in rows if r[0] == "rps"}
    fills = [r for r in rows if r[0] == "fill"]

    print("### Large blobs (cache hits, HTTP/1.1, TLS 1.3 AES-128-GCM)\n")
    print("| scenario | server | MB/s | server CPU-s per GB | peak RSS MiB | CPU/GB vs nginx |")
    print("|---|---|---:|---:|---:|---:|")
    nginx_cpu = {r[1]: r[5] for r in streams if r[3] == "nginx"}
    for r in streams:
        print(f"| {r[1]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} | {ratio(r[5], nginx_cpu.get(r[1]))} |")

    print("\n### Requests with keep-alive (wrk, 1 thread, 16 connections)\n")
    print(
        "| scenario | auth | nginx req/s | docker-registry req/s | mirror req/s "
        "| mirror/nginx | mirror/registry | CPU µs/req nginx / registry / mirror "
        "| mirror p50 / p99 | mirror basic/none |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    scenarios = []
    for (scenario, auth, _) in rps:
        if (scenario, auth) not in scenarios:
            scenarios.append((scenario, auth))
    for scenario, auth in scenarios:
        got = {s: rps.get((scenario, auth, s)) for s in SERVERS}
        req = {s: (v[0] if v else "-") for s, v in got.items()}
        cpu = " / ".join(v[3] if v else "-" for v in got.values())
        mirror = got["mirror"]
        lat = f"{mirror[1]} / {mirror[2]}" if mirror else "-"
        vs_none = "-"
        if auth != "none" and mirror:
            unauth = rps.get((scenario, "none", "mirror"))
            vs_none = ratio(mirror[0], unauth[0] if unauth else None)
        print(
            f"| {scenario} | {auth} | {req['nginx']} | {req['docker-registry']} | {req['mirror']} "
            f"| {ratio(req['mirror'], req['nginx'])} | {ratio(req['mirror'], req['docker-registry'])} "
            f"| {cpu} | {lat} | {vs_none} |"
        )

    if fills:
        print("\n### Cold fill (first pull of the 1 GiB blob, one client)\n")
        print("| path | wall s | MB/s | server CPU-s |")
        print("|---|---:|---:|---:|")
        for r in fills:
            path = "docker-registry, direct" if r[3] == "docker-registry" else "mirror, filling from docker-registry"
            print(f"| {path} | {r[4]} | {r[5]} | {r[6]} |")
        walls = {r[3]: r[4] for r in fills}
        print(f"\nmirror/direct wall time: {ratio(walls.get('mirror'), walls.get('docker-registry'))}")


if __name__ == "__main__":
    main()
