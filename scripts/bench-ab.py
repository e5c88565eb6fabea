"""Two server builds side by side: which one reads (or writes, or creates tokens) faster, measured in pairs.

On a shared machine the host's speed drifts by tens of per cent over minutes, so two builds
measured one after the other (scripts/bench.py, alternating) differ by more than most changes
do. This starts both builds at once, each on sled in its own temp folder, prepared as
scripts/bench.py prepares `kv2_read` (and, unless --unaudited, one file audit device), then
alternates short wrk runs between them (A B, B A, ...) and compares each pair: two runs seconds
apart share the host's mood. With --writes the runs are scripts/bench.py's `kv2_write_durable`
(each request a durable KV v2 write of a new key), with --updates durable KV v2 writes of new
versions of 1,024 keys, with --tokens its `token_create` (a child token with a 1 h TTL per request),
instead of reads. Prints every run (requests/s and the server's CPU time per
request, user + system from /proc), the medians, and the paired ratios B/A with their median.

Usage: python3 scripts/bench-ab.py <arcanum binary A> <arcanum binary B> [rounds=10] [seconds=4] [--unaudited] [--writes | --updates | --tokens]
"""

import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (scripts/bench.py: its server start, HTTP calls and wrk runs)

CONNECTIONS = 32


def prepared_server(binary, audited, mode, tmp):
    """scripts/bench.py's server, with the audit device when `audited`; returns the process,
    the URL wrk targets, its script (None for reads) and the token it sends."""
    server, url, root, app = bench.prepared_server(binary, tmp)
    v1 = f"{url}/v1"
    if audited:
        bench.call(f"{v1}/sys/audit/file", "PUT", {"type": "file", "options": {"file_path": f"{tmp}/audit.log"}}, root)
    if mode == "writes":
        return server, url, bench.kv2_write_script(tmp), app
    if mode == "updates":
        return server, url, bench.kv2_update_script(tmp), app
    if mode == "tokens":
        return server, url, bench.token_create_script(tmp), root
    return server, f"{v1}/secret/data/app/db", None, app


def main():
    args = [arg for arg in sys.argv[1:] if arg not in ("--unaudited", "--writes", "--updates", "--tokens")]
    if len(args) not in (2, 3, 4):
        raise SystemExit(__doc__.strip().splitlines()[-1])
    binaries = args[:2]
    rounds = int(args[2]) if len(args) > 2 else 10
    seconds = int(args[3]) if len(args) > 3 else 4
    modes = [mode for mode in ("writes", "updates", "tokens") if f"--{mode}" in sys.argv]
    if len(modes) > 1:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    mode = modes[0] if modes else "reads"
    audited = "--unaudited" not in sys.argv and mode == "reads"
    folders = [tempfile.mkdtemp(prefix="arcanum-ab-") for _ in binaries]
    servers = []
    try:
        for binary, tmp in zip(binaries, folders):
            servers.append(prepared_server(binary, audited, mode, tmp))
        for _, url, script, token in servers:
            bench.wrk(url, CONNECTIONS, 2, script, [f"X-Vault-Token: {token}"])  # warm-up
        runs = [[], []]
        scenario = {"writes": "kv2_write_durable", "updates": "kv2_update_durable", "tokens": "token_create"}.get(mode, f"kv2_read{'_audited' if audited else ''}")
        print(f"{scenario}, {CONNECTIONS} connections, {seconds} s runs; "
              "round build requests/s server_cpu_us", flush=True)
        for round_ in range(rounds):
            for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                server, url, script, token = servers[which]
                rps, _, _, cpu = bench.wrk_cpu(server.pid, url, CONNECTIONS, seconds, script,
                                               [f"X-Vault-Token: {token}"])
                runs[which].append((rps, cpu))
                print(f"{round_ + 1} {'AB'[which]} {rps:.0f} {cpu:.2f}", flush=True)
        for which, binary in enumerate(binaries):
            print(f"{'AB'[which]} ({binary}): median {statistics.median(r for r, _ in runs[which]):,.0f} requests/s, "
                  f"{statistics.median(c for _, c in runs[which]):.2f} µs of server CPU per request")
        rps_ratios = [b[0] / a[0] for a, b in zip(*runs)]
        cpu_ratios = [b[1] / a[1] for a, b in zip(*runs)]
        print(f"B/A requests/s, paired: median {statistics.median(rps_ratios):.3f} "
              f"({', '.join(f'{r:.3f}' for r in rps_ratios)})")
        print(f"B/A CPU per request, paired: median {statistics.median(cpu_ratios):.3f} "
              f"({', '.join(f'{r:.3f}' for r in cpu_ratios)})")
    finally:
        for server, *_ in servers:
            server.kill()
            server.wait()
        for tmp in folders:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
