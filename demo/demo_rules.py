#!/usr/bin/env python3
"""Several retention rules in one run: four image families on the local EC2 emulator.

usage: demo_rules.py BINARY MOTO_SERVER

Seeds legacy, golden, CI and nightly images (the families of samples/rules/), shows the
dry-run plan of demo/policy-rules.json (first match wins: each group header names its
rule), runs the sweep for real, then counts what is left of each family in the emulator.
Run it with the emulator's virtualenv Python: `make demo-rules` does.
"""
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import emulator  # noqa: E402

ACCOUNT = "123456789012"
NOW = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
FAMILIES = ("legacy", "golden", "ci", "nightly", "other")


def estate():
    """Legacy ERP images, monthly golden images of two lineages (one on an audit hold),
    CI builds of the last days, sixty days of nightly builds of two apps, one stray."""
    images = []

    def add(name, days, tags, hours=2):
        created = NOW - dt.timedelta(days=days, hours=hours)
        images.append({
            "ami_id": "ami-%017x" % (0xe000 + len(images)), "owner_id": ACCOUNT, "name": name,
            "creation_date": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "state": "available", "root_device_type": "ebs", "root_device_name": "/dev/xvda",
            "architecture": "x86_64", "virtualization_type": "hvm", "hypervisor": "xen",
            "image_type": "machine", "tags": tags,
        })

    for k, days in enumerate((900, 1200, 1500)):
        add(f"legacy-erp-{2024 - k}", days, {"family": "legacy"})
    for lineage in ("base", "web"):
        for m in range(16):
            tags = {"family": "golden", "image": f"golden-{lineage}"}
            if lineage == "web" and m == 13:
                tags["retain"] = "audit-2025"
            add(f"golden-{lineage}-m{m:02}", 5 + 30 * m, tags)
    for k in range(10):
        add(f"ci-build-{4711 + k}", k, {"purpose": "ci"})
    for app in ("web", "api"):
        for day in range(60):
            add(f"nightly-{app}-d{day:02}", day, {"family": "nightly", "app": app})
    add("nightly-web-ci-4720", 5, {"family": "nightly", "app": "web", "purpose": "ci"})
    add("scratch-experiment-7", 200, {"owner": "alice"})
    return images


def family(image):
    """The family a demo image belongs to, by its name (what the policy's rules decide)."""
    name = image["Name"]
    if name.startswith("nightly-web-ci-"):
        return "ci"
    for f in FAMILIES[:-1]:
        if name.startswith(f):
            return f
    return "other"


def counts(ec2):
    left = {f: 0 for f in FAMILIES}
    for page in ec2.get_paginator("describe_images").paginate(Owners=["self"]):
        for i in page["Images"]:
            left[family(i)] += 1
    return left


def main():
    binary, moto = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ami-sweeper-demo-rules-")
    images = estate()
    seed = os.path.join(tmp, "amis.json")
    with open(seed, "w") as f:
        json.dump(images, f)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    server, upstream = emulator.start(moto, seed)
    proxy, endpoint = emulator.start_proxy(upstream, 1000)
    try:
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="demo", aws_secret_access_key="demo")
        before = counts(ec2)
        print(f"== local EC2 emulator on {endpoint}: {len(images)} images: "
              + ", ".join(f"{f} {n}" for f, n in before.items()), flush=True)
        policy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policy-rules.json")
        print(f"== policy {os.path.relpath(policy)}: four rules, first match wins: legacy "
              "(never touched), golden (a year and the last 10 per lineage), ci (3 days), "
              "nightly (30 days and the last 5 per app)", flush=True)
        env = emulator.client_env(endpoint)
        base = [binary, "sweep", "--policy", policy, "--now", NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "--rate", "200", "--describe-rate", "200", "--retry-delay", "1"]
        print("== the plan (dry run: nothing changes); each group header starts with its rule",
              flush=True)
        dry = subprocess.run(base + ["--dry-run", "--format", "table"], env=env)
        if dry.returncode not in (0, 1):
            return dry.returncode
        print("== the sweep (for real)", flush=True)
        real = subprocess.run(base + ["--format", "table"], env=env, stdout=subprocess.DEVNULL)
        after = counts(ec2)
        print("== images left per family (before -> after): "
              + ", ".join(f"{f} {before[f]} -> {after[f]}" for f in FAMILIES), flush=True)
        return real.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        emulator.stop(proxy)
        emulator.stop(server)


if __name__ == "__main__":
    sys.exit(main())
