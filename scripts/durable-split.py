"""Where a durable write's time goes, by thread: CPU (user and system), wake-ups and flush rounds.

Starts each given server build as scripts/bench.py prepares it (sled in a temp folder, KV v2,
the policy-limited token), puts it under 32 connections of `kv2_write_durable`'s load (a new
key per request) or, with --tokens, of `token_create`'s (a child token with a 1 h TTL), and
reads per thread from /proc before and after each run: CPU time (user, system) and voluntary
context switches, per request. Threads are grouped by name: tokio's workers, our sled writer
(`arcanum-sled-wr`), our flusher (`arcanum-sled-fl`), sled's I/O pool (`sled-io-*`).

A flush round ends with one `fdatasync` of sled's log (storage/src/disk_sync.rs), so the
rounds are counted with `perf stat -e syscalls:sys_enter_fdatasync` on the server when perf is
installed (the count costs one trace event per round; rates drop a little while it runs).
Context switches are not rounds: a round blocks its flusher two or three times (waiting for
writers, for sled's I/O thread, in `fdatasync`).

Builds alternate run by run (A B, B A, ...) so that each pair shares the host's mood.

Usage: python3 scripts/durable-split.py <arcanum binary>... [--runs=3] [--seconds=5] [--tokens]
"""

import collections
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (scripts/bench.py: its server start, scripts and wrk runs)

CONNECTIONS = 32
GROUPS = ("tokio-rt-worker", "arcanum-sled-wr", "arcanum-sled-fl", "sled-io")


def group(comm):
    return "sled-io" if comm.startswith("sled-io") else comm


def thread_counters(pid):
    """Per thread group: [user ticks, system ticks, voluntary context switches]."""
    counters = collections.defaultdict(lambda: [0, 0, 0])
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                switches = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", f.read(), re.M).group(1))
        except (OSError, AttributeError):
            continue  # a thread that ended between the listing and the read
        totals = counters[group(comm)]
        totals[0] += int(fields[11])
        totals[1] += int(fields[12])
        totals[2] += switches
    return counters


def measured_run(server, url, script, token, seconds):
    perf = None
    if shutil.which("perf"):
        perf = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "syscalls:sys_enter_fdatasync", "-p", str(server.pid)],
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.2)  # perf attaches asynchronously; a round missed at the start changes nothing
    before = thread_counters(server.pid)
    rps, _, p99, count = bench.wrk(f"{url}/", CONNECTIONS, seconds, script, [f"X-Vault-Token: {token}"])
    after = thread_counters(server.pid)
    rounds = None
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        stderr = perf.communicate()[1]
        found = re.search(r"^(\d+),", stderr, re.M)
        rounds = int(found.group(1)) if found else None
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    split = {}
    for name in GROUPS:
        delta = [b - a for a, b in zip(before.get(name, [0, 0, 0]), after.get(name, [0, 0, 0]))]
        split[name] = (delta[0] * tick_us / count, delta[1] * tick_us / count, delta[2] / count)
    return rps, p99, count, rounds, split


def main():
    flags = [arg for arg in sys.argv[1:] if arg.startswith("--")]
    binaries = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    options = dict(flag[2:].split("=", 1) for flag in flags if "=" in flag)
    tokens = "--tokens" in flags
    unknown = [f for f in flags if f != "--tokens" and f.split("=", 1)[0] not in ("--runs", "--seconds")]
    if not binaries or unknown:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    runs, seconds = int(options.get("runs", 3)), int(options.get("seconds", 5))
    folders = [tempfile.mkdtemp(prefix="arcanum-split-") for _ in binaries]
    servers = []
    try:
        for binary, tmp in zip(binaries, folders):
            server, url, root, app = bench.prepared_server(binary, tmp)
            script = bench.token_create_script(tmp) if tokens else bench.kv2_write_script(tmp)
            servers.append((binary, server, url, script, root if tokens else app))
        results = collections.defaultdict(list)
        for run in range(runs):
            order = servers if run % 2 == 0 else list(reversed(servers))
            for binary, server, url, script, token in order:
                rps, p99, count, rounds, split = measured_run(server, url, script, token, seconds)
                results[binary].append((rps, rounds, count, split))
                per_round = f"{count / rounds:.2f} per round" if rounds else "rounds not counted"
                parts = ", ".join(
                    f"{name} {user:.1f}+{system:.1f} µs {switches:.2f} wake-ups"
                    for name, (user, system, switches) in split.items()
                )
                print(f"{run + 1} {binary}: {rps:,.0f}/s p99 {p99} ms, {count} requests, {per_round}; {parts}",
                      flush=True)
        print("medians (CPU per request user+system µs, voluntary switches per request):")
        for binary, rows in results.items():
            per_round = [count / rounds for _, rounds, count, _ in rows if rounds]
            line = f"{binary}: {statistics.median(r[0] for r in rows):,.0f}/s"
            if per_round:
                line += f", {statistics.median(per_round):.2f} requests per flush round"
            for name in GROUPS:
                user = statistics.median(r[3][name][0] for r in rows)
                system = statistics.median(r[3][name][1] for r in rows)
                switches = statistics.median(r[3][name][2] for r in rows)
                line += f"; {name} {user:.1f}+{system:.1f} µs, {switches:.2f}"
            print(line)
    finally:
        for _, server, *_ in servers:
            server.terminate()
            server.wait()
        for tmp in folders:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
