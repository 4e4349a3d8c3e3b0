#!/usr/bin/env python3
"""Summarises write-floor-batch JSON runs: DIR/{pinned,unpinned}-{live,after}-N.json.

Per method: mean over the runs of ns per write, with the spread (min..max of the
per-run values), and the change against `writev` of the same runs."""
import glob
import json
import os
import sys

d = sys.argv[1] if len(sys.argv) > 1 else "docs/perf/uring-floor"
for pin in ("unpinned", "pinned"):
    for reader in ("live", "after"):
        runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(d, f"{pin}-{reader}-*.json")))]
        if not runs:
            continue
        r0 = runs[0]
        print(f"\n{pin} (cpus {r0['cpus']}), reader {reader}: {r0['conns']} sockets, "
              f"{r0['rounds']} rounds, {r0['frame_bytes']}-byte frames, {len(runs)} runs; ns per write\n")
        print("| method | syscalls/write | wall p50 | writer CPU | other threads | writer+other | vs writev | all threads (+reader) | vs writev |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        methods = [r["method"] for r in r0["results"]]

        def col(m, f):
            return [f(next(x for x in run["results"] if x["method"] == m)) for run in runs]

        hub = lambda x: x["writer_cpu_ns"] + x["other_cpu_ns"]
        tot = lambda x: x["writer_cpu_ns"] + x["other_cpu_ns"] + x["reader_cpu_ns"]
        base_hub = sum(col("writev", hub)) / len(runs)
        base_tot = sum(col("writev", tot)) / len(runs)

        def fmt(vals):
            mean = sum(vals) / len(vals)
            return f"{mean:,.0f} ({min(vals):,.0f}–{max(vals):,.0f})"

        for m in methods:
            sc = col(m, lambda x: x["syscalls"] / x["writes"])[0]
            h = col(m, hub)
            t = col(m, tot)
            print(f"| {m} | {sc:.4f} | {fmt(col(m, lambda x: x['wall_ns_p50']))} | "
                  f"{fmt(col(m, lambda x: x['writer_cpu_ns']))} | {fmt(col(m, lambda x: x['other_cpu_ns']))} | "
                  f"{fmt(h)} | {(sum(h) / len(h) / base_hub - 1) * 100:+.1f} % | "
                  f"{fmt(t)} | {(sum(t) / len(t) / base_tot - 1) * 100:+.1f} % |")
