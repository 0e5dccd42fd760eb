#!/usr/bin/env python3
"""Sweep benchmark against the local EC2 emulator.

usage: bench_sweep.py BINARY MOTO_SERVER [IMAGES]

Seeds a fresh moto server (loopback, free port) with IMAGES old images in lineages of
nightly builds, runs `ami-sweeper sweep` as a dry run and then for real, and prints the
wall time, peak memory and API calls per operation of each, with the minimum number of
calls the issue sets as the goal. The emulator is stopped whatever happens.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import emulator


def seed(n: int) -> list:
    apps = ["web", "api", "batch", "worker", "search", "billing", "auth", "etl"]
    out = []
    for i in range(n):
        app = apps[i % len(apps)]
        day = i // len(apps)
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(1767225600 - day * 86400))
        out.append({
            "ami_id": "ami-%017x" % (i + 1),
            "owner_id": "123456789012",
            "name": "%s-%05d" % (app, 100000 - day),
            "creation_date": created,
            "state": "available",
            "root_device_type": "ebs",
            "root_device_name": "/dev/xvda",
            "architecture": "x86_64",
            "virtualization_type": "hvm",
            "hypervisor": "xen",
            "image_type": "machine",
            "public": False,
            "tags": {"app": app, "team": "platform"},
        })
    return out


def run(label, cmd, env):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code not in (0, 1):
            sys.exit(f"{label}: exit {code}: {err.read().decode()[-2000:]}")
        report = json.loads(out.read())
    t = report["totals"]
    print(f"{label}: {wall:.2f} s wall, peak RSS {usage.ru_maxrss / 1024:.1f} MiB, "
          f"outcomes {t['outcomes']}, jobs {t['jobs']}, failures {t['failures']}")
    print(f"  api calls: {report['api_calls']}")
    return report


def main() -> int:
    binary, moto = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    tmp = tempfile.mkdtemp(prefix="ami-sweeper-bench-")
    seed_path = os.path.join(tmp, "amis.json")
    with open(seed_path, "w") as f:
        json.dump(seed(n), f)
    policy_path = os.path.join(tmp, "policy.json")
    with open(policy_path, "w") as f:
        json.dump({"dry_run": False, "retention": {"min_age_days": 30, "keep_count": 5,
                                                   "group_by": {"tags": ["app"]}}}, f)
    server, endpoint = emulator.start(moto, seed_path)
    try:
        cenv = emulator.client_env(endpoint)
        base = [binary, "sweep", "--policy", policy_path, "--format", "json",
                "--now", "2026-11-26T00:00:00Z", "--rate", "1000", "--describe-rate", "1000",
                "--retry-delay", "1"]
        print(f"== sweep of {n} emulated images ({os.cpu_count()} cores); "
              "--rate/--describe-rate 1000 lift the client-side limits so the figures show the work, not the wait")
        dry = run("dry run", base + ["--dry-run"], cenv)
        real = run("real run", base, cenv)
        condemned = dry["totals"]["outcomes"].get("planned", 0)
        print(f"  minimum for the real run: DescribeImages 1 page (moto does not paginate), "
              f"DescribeImageAttribute {condemned}, DeregisterImage {condemned}, "
              f"DeleteSnapshot {condemned} (one snapshot each)")
        return 0 if real["totals"]["failures"] == 0 else 1
    finally:
        emulator.stop(server)


if __name__ == "__main__":
    sys.exit(main())
