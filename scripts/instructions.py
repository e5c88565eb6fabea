"""Instructions the server executes per request, counted by valgrind's callgrind: a figure that,
unlike requests per second, repeats to within 0.1% from run to run, so that a change worth 1% can
be measured on a noisy machine. Used for the small optimisations of issue 22 (docs/BENCHMARKS.md).

Starts the release server (or $ARCANUM) under callgrind on sled in a temp folder, initialises,
unseals, mounts KV v2 at secret/, writes secret/data/app/db with a policy-limited token, then
for the scenario sends 200 warm-up requests, zeroes the counters, sends <count> requests one
after another on one keep-alive connection, dumps the counters and prints their total (every
thread of the server) divided by <count>.

Scenarios: kv2_read (the read of scripts/bench), kv2_read_audited (the same with one file audit
device), kv2_write (a new key per write), kv2_update (a new version of one of 8 keys, each
past its 10 kept versions, so that every write also purges one), token_create (a child token
with a 1 h TTL).

valgrind runs SHA-256 without the CPU's SHA extensions, so hashing counts for more here than on
the machine; compare builds with each other, not with wall-clock shares.

Usage: python3 scripts/instructions.py <scenario> [count=2000]

With CALLGRIND_KEEP=<dir> the dumps are copied there, for callgrind_annotate to say where the
instructions go.
"""

import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCANUM = os.environ.get("ARCANUM") or os.path.join(ROOT, "target/release/arcanum")
SCENARIOS = ("kv2_read", "kv2_read_audited", "kv2_write", "kv2_update", "token_create")
# What the KV v2 write scenarios send (scripts/bench.py sends the same).
KV2_WRITE_BODY = {"data": {"value": "0123456789abcdef0123456789abcdef"}}


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in SCENARIOS:
        raise SystemExit(f"usage: instructions.py <{'|'.join(SCENARIOS)}> [count=2000]")
    scenario = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) == 3 else 2000
    if shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    tmp = tempfile.mkdtemp(prefix="arcanum-instructions-")
    server = None
    try:
        with open(os.path.join(tmp, "config.hcl"), "w") as f:
            f.write(f'storage "sled" {{ path = "{tmp}/data" }}\n'
                    'listener "tcp" {\n  address = "127.0.0.1:0"\n  tls_disable = true\n}\nlog_level = "warn"\n')
        out = open(os.path.join(tmp, "server.out"), "w+")
        server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
                                   ARCANUM, "server", f"-config={tmp}/config.hcl"],
                                  stdout=out, stderr=subprocess.DEVNULL, text=True)
        address = None
        deadline = time.monotonic() + 120
        while address is None and time.monotonic() < deadline:
            out.seek(0)
            found = re.search(r"arcanum: listening on http://([\d.]+):(\d+)", out.read())
            address = found and (found.group(1), int(found.group(2)))
            time.sleep(0.1)
        if address is None:
            raise SystemExit("the server did not start under valgrind within 120 s")
        conn = http.client.HTTPConnection(*address)

        def call(method, path, body=None, token=None):
            headers = {"Content-Type": "application/json"}
            if token:
                headers["X-Vault-Token"] = token
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = conn.getresponse()
            text = response.read()
            if response.status >= 300:
                raise SystemExit(f"{method} {path}: {response.status} {text!r}")
            return json.loads(text) if text else None

        init = call("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        call("PUT", "/v1/sys/unseal", {"key": init["keys"][0]})
        root = init["root_token"]
        call("POST", "/v1/sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, root)
        call("PUT", "/v1/sys/policies/acl/app",
             {"policy": 'path "secret/data/app/*" { capabilities = ["create", "read", "update"] }'}, root)
        app = call("POST", "/v1/auth/token/create", {"policies": ["app"]}, root)["auth"]["client_token"]
        call("POST", "/v1/secret/data/app/db", {"data": {"user": "app", "password": "s3cret-value"}}, app)
        if scenario == "kv2_read_audited":
            call("PUT", "/v1/sys/audit/file", {"type": "file", "options": {"file_path": f"{tmp}/audit.log"}}, root)

        def request(i):
            if scenario.startswith("kv2_read"):
                call("GET", "/v1/secret/data/app/db", token=app)
            elif scenario == "kv2_write":
                call("POST", f"/v1/secret/data/app/w{i}", KV2_WRITE_BODY, app)
            elif scenario == "kv2_update":
                call("POST", f"/v1/secret/data/app/u{i % 8}", KV2_WRITE_BODY, app)
            else:
                call("POST", "/v1/auth/token/create", {"policies": ["app"], "ttl": "1h"}, root)

        for i in range(200):
            request(-1 - i)
        subprocess.run(["callgrind_control", "--zero", str(server.pid)], capture_output=True, check=True)
        for i in range(count):
            request(i)
        subprocess.run(["callgrind_control", "--dump", str(server.pid)], capture_output=True, check=True)
        total = 0
        for dump in glob.glob(f"{tmp}/callgrind.out.*"):
            with open(dump) as f:
                total += int(re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M).group(1))
        print(f"{scenario}: {total / count:,.0f} instructions per request ({count} requests, {ARCANUM})")
        if os.environ.get("CALLGRIND_KEEP"):
            os.makedirs(os.environ["CALLGRIND_KEEP"], exist_ok=True)
            for dump in glob.glob(f"{tmp}/callgrind.out.*"):
                shutil.copy(dump, os.environ["CALLGRIND_KEEP"])
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
