#!/usr/bin/env python3
"""ami-sweeper next to Cloud Custodian and aws-amicleaner on the same emulated estate.

Status: the side-by-side part of issue 6 only (no throttling proxy, no BENCHMARKS.md yet);
run by hand with the peers' virtualenv Python, see the session notes.

usage: bench_peers.py AMI_SWEEPER MOTO_SERVER CUSTODIAN AMICLEANER [IMAGES] [RUNS]

For each tool and each run: a fresh emulator seeded with IMAGES images (8 apps, one
build a day per app), a dry run, then the real run. Every tool is given the same rule
(deregister images older than 30 days, delete their snapshots), so they must delete the
same set; any difference is printed as a finding. Prints medians of wall time and the
peak memory of each tool's process. Run it with a Python that has boto3.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import boto3

import emulator
from bench_sweep import seed


def run(cmd, env, stdin=None):
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        if stdin:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{cmd[0]} exited {code}: {text[-1500:]}")
    return wall, usage.ru_maxrss / 1024


def state(endpoint):
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2 = boto3.client("ec2", **kw)
    images = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    return images, snaps


def main():
    sweeper, moto, custodian, amicleaner = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
    runs = int(sys.argv[6]) if len(sys.argv) > 6 else 3
    tmp = tempfile.mkdtemp(prefix="ami-sweeper-peers-")
    seed_path = os.path.join(tmp, "amis.json")
    with open(seed_path, "w") as f:
        json.dump(seed(n), f)
    policy = os.path.join(tmp, "policy.json")
    with open(policy, "w") as f:
        json.dump({"dry_run": False, "retention": {"min_age_days": 30}}, f)
    c7n_policy = os.path.join(tmp, "custodian.yml")
    with open(c7n_policy, "w") as f:
        f.write("policies:\n- name: ami-cleanup\n  resource: ami\n  filters:\n"
                "    - type: image-age\n      days: 30\n"
                "  actions:\n    - type: deregister\n      delete-snapshots: true\n")
    tools = {
        "ami-sweeper": (
            [sweeper, "sweep", "--policy", policy, "--format", "json", "--rate", "1000", "--describe-rate", "1000", "--dry-run"],
            [sweeper, "sweep", "--policy", policy, "--format", "json", "--rate", "1000",
             "--describe-rate", "1000"], None),
        "cloud-custodian": (
            [custodian, "run", "--dryrun", "--cache-period", "0", "-s", os.path.join(tmp, "c7n-dry"),
             "-r", "us-east-1", "--assume", "arn:aws:iam::123456789012:role/bench", c7n_policy],
            [custodian, "run", "--cache-period", "0", "-s", os.path.join(tmp, "c7n"),
             "-r", "us-east-1", "--assume", "arn:aws:iam::123456789012:role/bench", c7n_policy], None),
        "aws-amicleaner": (
            [amicleaner, "--mapping-key", "tags", "--mapping-values", "app",
             "--keep-previous", "0", "--ami-min-days", "30"],
            [amicleaner, "--mapping-key", "tags", "--mapping-values", "app",
             "--keep-previous", "0", "--ami-min-days", "30", "-f"], "n\n"),
    }
    results, deleted = {}, {}
    for name, (dry_cmd, real_cmd, dry_stdin) in tools.items():
        for _ in range(runs):
            server, endpoint = emulator.start(moto, seed_path)
            try:
                env = emulator.client_env(endpoint)
                images0, snaps0 = state(endpoint)
                dry = run(dry_cmd, env, dry_stdin)
                if state(endpoint) != (images0, snaps0):
                    print(f"FINDING: {name}'s dry run changed the account")
                real = run(real_cmd, env)
                images1, snaps1 = state(endpoint)
                deleted[name] = (images0 - images1, snaps0 - snaps1)
                results.setdefault(name, []).append((dry, real))
            finally:
                emulator.stop(server)
    base = statistics.median(r[1][0] for r in results["ami-sweeper"])
    print(f"== {n} emulated images, {runs} runs per tool, medians ({os.cpu_count()} cores); "
          "wall time includes the emulator's own per-call cost")
    print(f"{'tool':<16} {'dry s':>7} {'dry MiB':>8} {'real s':>7} {'real MiB':>9} "
          f"{'images':>7} {'snaps':>6} {'real vs ami-sweeper':>20}")
    for name, rs in results.items():
        dry_s = statistics.median(r[0][0] for r in rs)
        dry_m = max(r[0][1] for r in rs)
        real_s = statistics.median(r[1][0] for r in rs)
        real_m = max(r[1][1] for r in rs)
        imgs, snaps = deleted[name]
        print(f"{name:<16} {dry_s:>7.2f} {dry_m:>8.1f} {real_s:>7.2f} {real_m:>9.1f} "
              f"{len(imgs):>7} {len(snaps):>6} {real_s / base:>19.2f}x")
    # Image ids come from the seed and match across emulators; snapshot ids are new in
    # every emulator, so snapshots are compared by count.
    ref_imgs, ref_snaps = deleted["ami-sweeper"]
    for name, (imgs, snaps) in deleted.items():
        if name != "ami-sweeper" and (imgs != ref_imgs or len(snaps) != len(ref_snaps)):
            print(f"FINDING: {name} deleted {len(imgs ^ ref_imgs)} images differently and "
                  f"{len(snaps)} snapshots against ami-sweeper's {len(ref_snaps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
