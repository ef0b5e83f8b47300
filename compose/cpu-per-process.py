#!/usr/bin/env python3
"""CPU seconds each program used over the next SECONDS, from /proc.

    compose/cpu-per-process.py 15

Run it beside a benchmark (BENCHMARKS.md, "Order fulfilment sagas"): it
sums user and system time per program name over all its processes and
threads (PostgreSQL's backends count as one), which tells the share of
PostgreSQL, the services and the broker when hardware counters are not
available. Processes that start and end inside the window are missed.
"""

import collections
import os
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_process():
    """pid -> (program name, CPU ticks so far)."""
    seen = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if name.startswith("postgres"):
            name = "postgres"
        seen[pid] = (name, int(fields[11]) + int(fields[12]))
    return seen


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
    before = cpu_by_process()
    started = time.time()
    time.sleep(seconds)
    after = cpu_by_process()
    wall = time.time() - started
    used = collections.Counter()
    for pid, (name, ticks) in after.items():
        used[name] += (ticks - before.get(pid, (name, 0))[1]) / TICKS
    total = sum(used.values())
    print(f"{wall:.1f} s wall, {total:.1f} CPU-s ({total / wall * 100:.0f}% of one core)")
    for name, cpu in used.most_common(8):
        print(f"  {name:24s} {cpu:7.2f} s  {cpu / total * 100:5.1f}%")


if __name__ == "__main__":
    main()
