#!/usr/bin/env python3
"""Sweep benchmark against the local EC2 emulator.

usage: bench_sweep.py BINARY MOTO_SERVER [IMAGES]

Seeds a fresh moto server (loopback, free port) with IMAGES old images in lineages of
nightly builds, runs `ami-sweeper sweep` as a dry run and then for real, and prints the
wall time, peak memory and API calls per operation of each, with the minimum number of
calls the issue sets as the goal. Then the cost of never losing storage: the write-ahead
mark (one CreateTags per condemned image) and the reconciliation pass (DescribeSnapshots),
as calls and as the emulator's time answering them (measured in the loopback proxy the
runs go through), and an orphan pass over IMAGES images plus IMAGES snapshots left behind
by images deregistered by hand. The emulators are stopped whatever happens. Run it with
the emulator's virtualenv Python (it has boto3): `make bench-sweep` does.
"""
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time

import emulator


def seed(n: int, first: int = 0) -> list:
    apps = ["web", "api", "batch", "worker", "search", "billing", "auth", "etl"]
    out = []
    for i in range(n):
        app = apps[i % len(apps)]
        day = i // len(apps)
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(1767225600 - day * 86400))
        out.append({
            "ami_id": "ami-%017x" % (first + i + 1),
            "snapshot_description": "Created by CreateImage(i-0bench) for ami-%017x" % (first + i + 1),
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
    if t["failures"]:
        # A benchmark of a run that failed measures nothing: say so and stop.
        errors = [r.get("error") for r in report["regions"] if r.get("error")]
        sys.exit(f"{label}: {t['failures']} failures: {errors}")
    print(f"{label}: {wall:.2f} s wall, peak RSS {usage.ru_maxrss / 1024:.1f} MiB, "
          f"outcomes {t['outcomes']}, jobs {t['jobs']}, failures {t['failures']}")
    print(f"  api calls: {report['api_calls']}")
    return report


def upstream(stats: dict, action: str) -> str:
    a = stats["actions"].get(action, {})
    return f"{action} {a.get('accepted', 0)} calls, {a.get('upstream_s', 0.0):.2f} s of emulator time"


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
    server, upstream_url = emulator.start(moto, seed_path)
    proxy, endpoint = emulator.start_proxy(upstream_url, 1000)
    failed = False
    try:
        cenv = emulator.client_env(endpoint)
        base = [binary, "sweep", "--policy", policy_path, "--format", "json",
                "--now", "2026-11-26T00:00:00Z", "--rate", "1000", "--describe-rate", "1000",
                "--retry-delay", "1"]
        print(f"== sweep of {n} emulated images ({os.cpu_count()} cores); "
              "--rate/--describe-rate 1000 lift the client-side limits so the figures show the work, not the wait")
        dry = run("dry run", base + ["--dry-run"], cenv)
        emulator.proxy_stats(endpoint, reset=True)
        start = time.perf_counter()
        real = run("real run", base, cenv)
        wall = time.perf_counter() - start
        stats = emulator.proxy_stats(endpoint)
        condemned = dry["totals"]["outcomes"].get("planned", 0)
        print(f"  minimum for the real run: DescribeImages 1 page (moto does not paginate), "
              f"DescribeImageAttribute {condemned}, DeregisterImage {condemned}, "
              f"DeleteSnapshot {condemned} (one snapshot each)")
        mark = stats["actions"].get("CreateTags", {}).get("upstream_s", 0.0)
        print(f"  never losing storage costs: {upstream(stats, 'CreateTags')} (the write-ahead mark, "
              f"{100 * mark / wall:.0f}% of the real run's {wall:.1f} s wall; at EC2's rates it draws on "
              "the mutating bucket, not DeregisterImage's, so the 5/s floor is unchanged); "
              f"{upstream(stats, 'DescribeSnapshots')}; "
              f"{upstream(stats, 'DeregisterImage')} for comparison")
        failed = real["totals"]["failures"] != 0
    finally:
        emulator.stop(proxy)
        emulator.stop(server)
    return orphan_pass(binary, moto, n, tmp) or worker_pass(binary, moto, n, tmp) or int(failed)


def orphan_pass(binary: str, moto: str, n: int, tmp: str) -> int:
    """n registered images plus n images deregistered by hand whose snapshots stay."""
    import boto3

    seed_path = os.path.join(tmp, "amis-orphans.json")
    with open(seed_path, "w") as f:
        json.dump(seed(n) + seed(n, first=n), f)
    policy_path = os.path.join(tmp, "policy-orphans.json")
    with open(policy_path, "w") as f:
        # No image is condemned (nothing matches): the run is the orphan pass alone.
        json.dump({"dry_run": False, "selection": {"names": ["nothing-*"]},
                   "retention": {"min_age_days": 30}, "cleanup": {"orphans": {"min_age_days": 1}}}, f)
    server, upstream_url = emulator.start(moto, seed_path)
    proxy, endpoint = emulator.start_proxy(upstream_url, 1000)
    try:
        ec2 = boto3.client("ec2", endpoint_url=upstream_url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        for i in range(n, 2 * n):
            ec2.deregister_image(ImageId="ami-%017x" % (i + 1))
        later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"== orphan pass: {n} images plus {n} snapshots left by images deregistered by hand "
              "(cleanup.orphans on; the clock 3 days ahead so they are past the 1-day minimum)")
        base = [binary, "sweep", "--policy", policy_path, "--format", "json", "--now", later,
                "--rate", "1000", "--describe-rate", "1000", "--retry-delay", "1"]
        dry = run("orphan pass, dry run", base + ["--dry-run"], emulator.client_env(endpoint))
        print(f"  found: {dry['totals']['orphans']}")
        real = run("orphan pass, real run", base, emulator.client_env(endpoint))
        print(f"  reclaimed: {real['totals']['orphans']}")
        return int(real["totals"]["failures"] != 0 or real["totals"]["orphans"]["foreign"] != n)
    finally:
        emulator.stop(proxy)
        emulator.stop(server)


def worker_pass(binary: str, moto: str, n: int, tmp: str) -> int:
    """n images swept into an SQS cleanup queue, then one drain: the worker's verification
    calls per batch of ten jobs and its peak memory."""
    import boto3

    seed_path = os.path.join(tmp, "amis-worker.json")
    with open(seed_path, "w") as f:
        json.dump(seed(n), f)
    policy_path = os.path.join(tmp, "policy-worker.json")
    with open(policy_path, "w") as f:
        json.dump({"dry_run": False, "retention": {"min_age_days": 30}}, f)
    server, upstream_url = emulator.start(moto, seed_path)
    # The emulator's front door answers what moto lacks (the Recycle Bin's rules, AWS's
    # reference check), unthrottled.
    front, endpoint = emulator.start_proxy(upstream_url, 1, throttle=False)
    try:
        env = emulator.client_env(endpoint)
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        url = sqs.create_queue(QueueName="cleanup", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
        print(f"== the queue worker: {n} images swept into an SQS queue, then one drain")
        run("sweep into the queue", [binary, "sweep", "--policy", policy_path, "--format", "json",
                                     "--now", "2026-11-26T00:00:00Z", "--rate", "1000",
                                     "--describe-rate", "1000", "--queue-url", url, "--queue-delay", "0"], env)
        with tempfile.TemporaryFile() as out:
            start = time.perf_counter()
            # Through the front door: the worker's DescribeImages by snapshot, the Recycle
            # Bin and its rules are answered there (moto lacks them).
            proc = subprocess.Popen([binary, "cleanup", "--format", "json", "--queue-url", url,
                                     "--policy", policy_path],
                                    env=env, stdout=out,
                                    stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            out.seek(0)
            report = json.loads(out.read())
        calls = report["api_calls"]
        batches = calls.get("ReceiveMessage", 1)
        print(f"drain: {wall:.2f} s wall, peak RSS {usage.ru_maxrss / 1024:.1f} MiB, "
              f"jobs {report['totals']}, ended {report['ended']}")
        print(f"  api calls: {calls}")
        print(f"  verification per batch of ten jobs: "
              f"DescribeSnapshots {calls.get('DescribeSnapshots', 0) / batches:.2f}, "
              f"DescribeImages {calls.get('DescribeImages', 0) / batches:.2f}, "
              f"ListImagesInRecycleBin {calls.get('ListImagesInRecycleBin', 0) / batches:.2f} "
              f"({batches} receives)")
        deleted = report["totals"].get("deleted", 0)
        return int(os.waitstatus_to_exitcode(status) != 0 or deleted != n)
    finally:
        emulator.stop(front)
        emulator.stop(server)


if __name__ == "__main__":
    sys.exit(main())
