#!/usr/bin/env python3
"""Splits what auditing a KV v2 read costs the server, per request, from two profiles.

Takes the folded stacks that `ARCANUM_BENCH_PERF=<dir> python3 scripts/bench.py 10 1
kv2_read,kv2_read_audited` leaves (<dir>/kv2_read.folded, <dir>/kv2_read_audited.folded) and the
request rates that run printed for each. perf samples `cpu-clock`, so a sample's weight is the
nanoseconds of CPU it stands for; divided by the requests served while perf recorded (the rate
times the run's length), it gives the server's CPU per request. The audited profile's stacks
are sorted into the audit's parts (the first part a stack matches wins), and both profiles into
coarse buckets, so that the audit's share can be checked against the difference between them.

Usage: scripts/audit-split.py <dir> <kv2_read rps> <kv2_read_audited rps> [seconds=10]
"""

import collections
import os
import sys

# (part, whether it is floor, test on the joined stack and its frames), in order: a stack counts
# for the first match. The floor is what an entry of Vault's shape, chained and appended, cannot
# do without.
AUDIT_PARTS = [
    ("trim thread (drops written stretches)", True, lambda s, st: "audit-trim" in st[0]),
    ("append: the write call", True, lambda s, st: "vfs_write" in s or "libc_write" in s),
    ("chain: SHA-256 of each line", True, lambda s, st: "seal_line" in s),
    ("HMACs (tokens, accessors, data leaves)", True, lambda s, st: "HmacSha256Key" in s or "Redactor::hash" in s),
    ("response entry (serialising)", True, lambda s, st: "response_entry" in s),
    ("request entry (serialising)", True, lambda s, st: "request_entry" in s),
    ("auth and request blocks (Prepared::of)", True, lambda s, st: "Prepared::of" in s),
    ("waiting for and waking the leader", False, lambda s, st: any(waits(frame) for frame in st)),
    ("allocating and freeing", False,
     lambda s, st: st[-1].startswith(("mi_", "_mi_")) or "malloc" in st[-1] or "free" in st[-1]),
    ("the rest (batching, clones, drops, timers, preemption)", False, lambda s, st: True),
]
FLOOR = {part for part, floor, _ in AUDIT_PARTS if floor}


def waits(frame):
    """A frame of the hand-off between a queued request and the leader (not one whose generic
    parameters merely name a channel's types)."""
    return frame.startswith(("tokio::sync::oneshot", "poll<tokio::sync::oneshot", "<tokio::sync::oneshot")) or any(
        name in frame for name in ("futex", "try_to_wake_up"))


def stacks(path):
    with open(path) as folded:
        for line in folded:
            stack, weight = line.rstrip().rsplit(" ", 1)
            yield stack, stack.split(";"), int(weight)


def is_audit(stack, frames):
    return "arcanum_audit" in stack or "audit-trim" in frames[0]


def bucket(stack, frames):
    if is_audit(stack, frames):
        return "audit"
    if "serve_request" in stack:
        return "the request's own work (not audit)"
    return "HTTP, runtime and kernel outside the request"


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    directory, plain_rps, audited_rps = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    per_request = {}
    parts = collections.Counter()
    for name, rps in (("kv2_read", plain_rps), ("kv2_read_audited", audited_rps)):
        requests = rps * seconds
        buckets = collections.Counter()
        for stack, frames, weight in stacks(os.path.join(directory, f"{name}.folded")):
            buckets[bucket(stack, frames)] += weight / requests / 1e3
            if name == "kv2_read_audited" and is_audit(stack, frames):
                part = next(part for part, _, matches in AUDIT_PARTS if matches(stack, frames))
                parts[part] += weight / requests / 1e3
        per_request[name] = buckets
    print("server CPU per request, us (kv2_read -> kv2_read_audited)")
    for key in sorted(set(per_request["kv2_read"]) | set(per_request["kv2_read_audited"])):
        before, after = per_request["kv2_read"][key], per_request["kv2_read_audited"][key]
        print(f"  {key:48s} {before:6.2f} -> {after:6.2f}  ({after - before:+.2f})")
    totals = [sum(per_request[name].values()) for name in ("kv2_read", "kv2_read_audited")]
    print(f"  {'total':48s} {totals[0]:6.2f} -> {totals[1]:6.2f}  ({totals[1] - totals[0]:+.2f})")
    print("the audit's parts, us per audited read")
    for part, cost in parts.most_common():
        print(f"  {part:48s} {cost:6.2f}{'  (floor)' if part in FLOOR else ''}")
    floor = sum(cost for part, cost in parts.items() if part in FLOOR)
    print(f"  {'floor (the parts marked)':48s} {floor:6.2f}")
    print(f"  {'all of the audit':48s} {sum(parts.values()):6.2f}")


if __name__ == "__main__":
    main()
