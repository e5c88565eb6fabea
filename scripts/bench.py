"""The standard benchmark table (run through ./scripts/bench, which builds the release binaries).

Starts the release server on sled, the bare axum baseline and the stand-in Kubernetes API
server, prepares each scenario, then for every scenario and run measures Arcanum with wrk and,
right after, its baseline: the bare axum endpoint with the same connection count, except for
durable KV v2 writes, whose baseline is the storage layer's own durable write rate (the
`durable_writes` example, 32 writers on sled in the same temp folder, one 100-byte record per
write). Beside the table it also reports those writes against the same example writing KV v2's
own records (a version and its metadata in one atomic batch per write), and against a second
server on the in-memory backend taking the same writes: the rate the request path allows when
storing costs nothing, which bounds what any change to the storage side can give. Prints one line per run
and a markdown table of medians: requests/second, p50 and p99 latency, the ratio to the
baseline measured in the same run, and the CPU time (user + system, from /proc) the server and
the axum baseline spent per request during their runs — steadier than requests/second on a
shared machine, since it leaves out what other tenants take. `kv2_read_audited` is the same read with one file audit
device enabled for its runs only. Database creds use the PostgreSQL at ARCANUM_TEST_PG_ADDR
(default 127.0.0.1:5432, trust auth); their users are revoked and dropped at the end.

ARCANUM_BENCH_PROFILE=debug runs the debug builds instead (CI's smoke run: it starts every
scenario, runs it briefly and reports, asserting nothing about speed).

ARCANUM_BENCH_PERF=<dir> also records the server with `perf record --call-graph dwarf` during
each scenario's first run and writes <dir>/<scenario>.svg, a flame graph, and
<dir>/<scenario>.folded, its folded stacks (needs perf and inferno's inferno-collapse-perf and
inferno-flamegraph on PATH).

Usage: scripts/bench [duration_secs=10] [runs=3] [scenario,...]
"""

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.environ.get("ARCANUM_BENCH_PROFILE", "release")
ARCANUM = os.path.join(ROOT, f"target/{PROFILE}/arcanum")
BASELINE = os.path.join(ROOT, f"target/{PROFILE}/examples/baseline")
STANDIN = os.path.join(ROOT, f"target/{PROFILE}/examples/k8s_standin")
# What every benchmarked KV v2 write sends.
KV2_WRITE_BODY = {"data": {"value": "0123456789abcdef0123456789abcdef"}}
DURABLE_WRITES = os.path.join(ROOT, f"target/{PROFILE}/examples/durable_writes")
PG = os.environ.get("ARCANUM_TEST_PG_ADDR", "127.0.0.1:5432")
PERF_DIR = os.environ.get("ARCANUM_BENCH_PERF")


def perf_start(pid, name):
    """Starts sampling the server's stacks, or does nothing without ARCANUM_BENCH_PERF."""
    if not PERF_DIR:
        return None
    os.makedirs(PERF_DIR, exist_ok=True)
    data = os.path.join(PERF_DIR, f"{name}.perf.data")
    # DWARF unwinding: the release build keeps line tables but not frame pointers.
    argv = ["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-p", str(pid), "-o", data]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), data, name


def perf_finish(recording):
    if recording is None:
        return
    proc, data, name = recording
    proc.send_signal(signal.SIGINT)
    proc.wait()
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True, check=True).stdout
    folded = subprocess.run(["inferno-collapse-perf"], input=script, capture_output=True, check=True).stdout
    with open(os.path.join(PERF_DIR, f"{name}.folded"), "wb") as f:
        f.write(folded)
    svg = subprocess.run(["inferno-flamegraph", "--title", f"arcanum: {name}", "--width", "1600"], input=folded,
                         capture_output=True, check=True).stdout
    with open(os.path.join(PERF_DIR, f"{name}.svg"), "wb") as f:
        f.write(svg)
    os.remove(data)


def start(argv, prefix, tmp, name, stdin=None):
    out = open(os.path.join(tmp, f"{name}.out"), "w+")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, stdin=stdin, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out.seek(0)
        for line in out:
            if line.startswith(prefix):
                return proc, line[len(prefix):].strip()
        time.sleep(0.01)
    raise SystemExit(f"{name} did not print {prefix!r}")


def call(url, method="GET", body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("X-Vault-Token", token)
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


def lua(tmp, name, method, path, body, keys=None):
    """A wrk script sending `body` to `path`; a `%d` in it becomes a random number and the
    request's count (a new key per request), or with `keys` one of that many numbers."""
    path_expr = f'"{path}"'
    if keys is not None:
        path_expr = f'string.format("{path}", math.random(1, {keys}))'
    elif "%d" in path:
        path_expr = f'string.format("{path}", math.random(1, 1000000000), counter)'
    script = os.path.join(tmp, f"{name}.lua")
    with open(script, "w") as f:
        f.write(
            # Headers go into wrk.headers (which already holds -H's): a table passed to
            # wrk.format would replace them.
            'wrk.headers["Content-Type"] = "application/json"\n'
            "counter = 0\n"
            "request = function()\n"
            "  counter = counter + 1\n"
            f"  return wrk.format(\"{method}\", {path_expr}, nil, "
            f"{json.dumps(json.dumps(body)) if body is not None else 'nil'})\n"
            "end\n"
        )
    return script


def kv2_write_script(tmp):
    """The wrk script of `kv2_write_durable`: each request writes a new key's first version."""
    return lua(tmp, "write", "POST", "/v1/secret/data/app/w%d-%d", KV2_WRITE_BODY)


def kv2_update_script(tmp):
    """A wrk script of KV v2 updates: each request writes a new version of one of 1,024 keys (past
    their 10 kept versions, every write also removes the oldest)."""
    return lua(tmp, "update", "POST", "/v1/secret/data/app/u%d", KV2_WRITE_BODY, keys=1024)


def token_create_script(tmp):
    """The wrk script of `token_create` (sent with the root token): a child token, 1 h TTL."""
    return lua(tmp, "token", "POST", "/v1/auth/token/create", {"policies": ["app"], "ttl": "1h"})


def to_ms(text):
    value = float(re.match(r"[\d.]+", text).group())
    if text.endswith("us"):
        return value / 1000
    if text.endswith("ms"):
        return value
    if text.endswith("s"):
        return value * 1000
    raise ValueError(text)


def cpu_seconds(pid):
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_cpu(pid, *args):
    """wrk(*args), with the CPU time per request that process `pid` spent serving it (µs)."""
    before = cpu_seconds(pid)
    rps, p50, p99, count = wrk(*args)
    return rps, p50, p99, (cpu_seconds(pid) - before) * 1e6 / max(count, 1)


def wrk(url, connections, duration, script=None, headers=()):
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    count = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx answers during the run:\n{out}")
    return rps, p50, p99, count


def prepared_server(binary, tmp, storage=None, name="arcanum"):
    """Starts `binary` on sled in `tmp` (or on `storage`, an HCL storage stanza), initialised and
    unsealed, with KV v2 at secret/, the policy `app` (read and write secret/data/app/*, read
    database/creds/bench), a token with it and the secret the reads read (secret/data/app/db).
    Returns the process, its address, the root token and the app token."""
    storage = storage or f'storage "sled" {{ path = "{tmp}/data" }}'
    config = os.path.join(tmp, f"{name}.hcl")
    with open(config, "w") as f:
        f.write(storage + '\nlistener "tcp" {\n  address = "127.0.0.1:0"\n  tls_disable = true\n}\nlog_level = "warn"\n')
    server, url = start([binary, "server", f"-config={config}"], "arcanum: listening on ", tmp, name)
    v1 = f"{url}/v1"
    init = call(f"{v1}/sys/init", "PUT", {"secret_shares": 1, "secret_threshold": 1})
    call(f"{v1}/sys/unseal", "PUT", {"key": init["keys"][0]})
    root = init["root_token"]
    call(f"{v1}/sys/mounts/secret", "POST", {"type": "kv", "options": {"version": "2"}}, root)
    call(
        f"{v1}/sys/policies/acl/app",
        "PUT",
        {"policy": 'path "secret/data/app/*" { capabilities = ["create", "read", "update"] }\n'
         'path "database/creds/bench" { capabilities = ["read"] }'},
        root,
    )
    app = call(f"{v1}/auth/token/create", "POST", {"policies": ["app"]}, root)["auth"]["client_token"]
    call(f"{v1}/secret/data/app/db", "POST", {"data": {"user": "app", "password": "s3cret-value"}}, app)
    return server, url, root, app


def median(column):
    """The median of a column, or None for a column with no figure (a baseline without a CPU time)."""
    figures = [figure for figure in column if figure is not None]
    return statistics.median(figures) if figures else None


def main():
    duration = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    only = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else None
    tmp = tempfile.mkdtemp()
    procs = []
    try:
        server, url, root, app = prepared_server(ARCANUM, tmp)
        procs.append(server)
        baseline_proc, baseline = start([BASELINE, "127.0.0.1:0"], "baseline: listening on ", tmp, "baseline")
        procs.append(baseline_proc)
        standin_in = subprocess.PIPE
        standin = subprocess.Popen([STANDIN], stdin=standin_in, stdout=subprocess.PIPE, text=True)
        procs.append(standin)
        hello = json.loads(standin.stdout.readline())
        v1 = f"{url}/v1"
        call(f"{v1}/sys/auth/userpass", "POST", {"type": "userpass"}, root)
        call(f"{v1}/auth/userpass/users/bench", "POST", {"password": "bench-password", "token_ttl": "10m"}, root)
        call(f"{v1}/sys/auth/kubernetes", "POST", {"type": "kubernetes"}, root)
        call(
            f"{v1}/auth/kubernetes/config",
            "POST",
            {"kubernetes_host": hello["host"], "kubernetes_ca_cert": hello["ca_pem"], "token_reviewer_jwt": hello["reviewer"]},
            root,
        )
        call(
            f"{v1}/auth/kubernetes/role/app",
            "POST",
            {"bound_service_account_names": ["app-sa"], "bound_service_account_namespaces": ["prod"],
             "token_policies": ["default"], "token_ttl": "10m"},
            root,
        )
        call(f"{v1}/sys/mounts/database", "POST", {"type": "database"}, root)
        call(
            f"{v1}/database/config/pg",
            "POST",
            {"plugin_name": "postgresql-database-plugin",
             "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{PG}/test?sslmode=disable",
             "username": "postgres", "password": "unused-with-trust-auth", "allowed_roles": "bench",
             "max_open_connections": 8},
            root,
        )
        call(
            f"{v1}/database/roles/bench",
            "POST",
            {"db_name": "pg", "default_ttl": "1h",
             "creation_statements": ['CREATE ROLE "{{name}}" WITH LOGIN PASSWORD \'{{password}}\' VALID UNTIL \'{{expiration}}\';']},
            root,
        )

        audit_log = os.path.join(tmp, "audit.log")

        def audit(enabled):
            if enabled:
                call(f"{v1}/sys/audit/file", "PUT", {"type": "file", "options": {"file_path": audit_log}}, root)
            else:
                call(f"{v1}/sys/audit/file", "DELETE", None, root)

        def storage_rate(duration, pattern):
            total = max(2000, 4000 * duration)
            out = subprocess.run([DURABLE_WRITES, "32", str(total), pattern], capture_output=True, text=True,
                                 check=True, env={**os.environ, "ARCANUM_BENCH_DIR": tmp}).stdout
            return float(re.search(r"writes_per_sec=([\d.]+)", out).group(1))

        # The storage layer's rate for KV v2's own records (a two-record batch per write), per run:
        # reported beside the table, whose baseline stays the one the issue set (single records).
        kv2_pattern_rates = []
        # The same writes to a server on the in-memory backend, per run (started on first use).
        write_script = kv2_write_script(tmp)
        ceiling_rates = []
        single_rates = []
        ceiling = {}

        def storage_writes(duration):
            """The storage layer's own durable writes/s, 32 writers, on the same filesystem."""
            kv2_pattern_rates.append(storage_rate(duration, "kv2"))
            if not ceiling:
                proc, ceiling["url"], _, ceiling["app"] = prepared_server(ARCANUM, tmp, 'storage "inmem" {}', "inmem")
                procs.append(proc)
                ceiling["pid"], ceiling["headers"] = proc.pid, [f"X-Vault-Token: {ceiling['app']}"]
                wrk(ceiling["url"], 32, min(2, duration), write_script, ceiling["headers"])
            rps, _, _, cpu = wrk_cpu(ceiling["pid"], ceiling["url"], 32, duration, write_script, ceiling["headers"])
            ceiling_rates.append((rps, cpu))
            single_rates.append(storage_rate(duration, "single"))
            return single_rates[-1], None

        def axum(connections):
            def measure(duration):
                rps, _, _, cpu = wrk_cpu(baseline_proc.pid, f"{baseline}/v1/sys/seal-status", connections, duration)
                return rps, cpu
            return measure

        read = f"{v1}/secret/data/app/db"
        # (name, connections, target, wrk script, headers, baseline, audited)
        scenarios = [
            ("kv2_read", 32, read, None, [f"X-Vault-Token: {app}"], axum(32), False),
            ("kv2_read_audited", 32, read, None, [f"X-Vault-Token: {app}"], axum(32), True),
            ("kv2_write_durable", 32, url, write_script, [f"X-Vault-Token: {app}"], storage_writes, False),
            ("token_create", 32, url, token_create_script(tmp), [f"X-Vault-Token: {root}"], axum(32), False),
            ("userpass_login", 16, url, lua(tmp, "userpass", "POST", "/v1/auth/userpass/login/bench",
                                            {"password": "bench-password"}), [], axum(16), False),
            ("kubernetes_login", 16, url, lua(tmp, "k8s", "POST", "/v1/auth/kubernetes/login",
                                              {"role": "app", "jwt": hello["jwt"]}), [], axum(16), False),
            ("database_creds", 16, f"{v1}/database/creds/bench", None, [f"X-Vault-Token: {app}"], axum(16), False),
        ]
        rows = []
        print("scenario run connections rps p50_ms p99_ms baseline_rps ratio server_cpu_us baseline_cpu_us", flush=True)
        for name, connections, target, script, headers, measure_baseline, audited in scenarios:
            if only and name not in only:
                continue
            if audited:
                audit(True)
            wrk(target, connections, min(2, duration), script, headers)  # warm-up
            samples = []
            for run in range(1, runs + 1):
                recording = perf_start(server.pid, name) if run == 1 else None
                rps, p50, p99, cpu = wrk_cpu(server.pid, target, connections, duration, script, headers)
                perf_finish(recording)
                base, base_cpu = measure_baseline(duration)
                samples.append((rps, p50, p99, base, rps / base, cpu, base_cpu))
                print(f"{name} {run} {connections} {rps:.0f} {p50:.2f} {p99:.2f} {base:.0f} {rps / base:.3f} "
                      f"{cpu:.2f} {'-' if base_cpu is None else f'{base_cpu:.2f}'}", flush=True)
            if audited:
                audit(False)
            rows.append((name, connections, [median(column) for column in zip(*samples)]))
        if any(name == "database_creds" for name, _, _ in rows) or not only:
            call(f"{v1}/sys/leases/revoke-prefix/database/creds/bench", "PUT", {}, root)

        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
        print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
              f"{runs} runs of {duration} s, medians; baseline measured after each run: the bare axum endpoint, "
              "or for kv2_write_durable the storage layer's durable writes (32 writers)")
        print("\n| scenario | connections | requests/s | p50 ms | p99 ms | baseline requests/s | ratio "
              "| server CPU µs/request | baseline CPU µs/request |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, connections, (rps, p50, p99, base, ratio, cpu, base_cpu) in rows:
            base_cpu = "—" if base_cpu is None else f"{base_cpu:.2f}"
            print(f"| {name} | {connections} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {base:,.0f} | {ratio:.3f} "
                  f"| {cpu:.2f} | {base_cpu} |")
        writes = next((row for row in rows if row[0] == "kv2_write_durable"), None)
        if writes and kv2_pattern_rates:
            pattern = statistics.median(kv2_pattern_rates)
            print(f"\nkv2_write_durable against the storage layer writing KV v2's own records (one batch of a "
                  f"version and its metadata per write, 32 writers): {writes[2][0]:,.0f} of {pattern:,.0f} "
                  f"writes/s, ratio {writes[2][0] / pattern:.3f}")
        if writes and ceiling_rates:
            ratios = [rate / single for (rate, _), single in zip(ceiling_rates, single_rates)]
            print(f"\nThe same writes to a server on the in-memory backend (no storage cost: the ceiling for any "
                  f"change to the storage side): {median(rate for rate, _ in ceiling_rates):,.0f} writes/s, "
                  f"{median(cpu for _, cpu in ceiling_rates):.2f} µs of server CPU per write, ratio to the storage "
                  f"layer's single-record rate {median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)})")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        # The server's and the storage baseline's data: gigabytes after a full run.
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
