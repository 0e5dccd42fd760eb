#!/usr/bin/env python3
"""ami-sweeper next to Cloud Custodian and aws-amicleaner, on the emulator and under
EC2's rate limits (`make bench`; the results are in BENCHMARKS.md).

usage: bench.py AMI_SWEEPER MOTO_SERVER CUSTODIAN AMICLEANER
                [--images N] [--runs R] [--throttled-images N] [--scale K]
                [--latency MS] [--only plain|throttled] [--tools a,b]

Every tool gets the same rule (deregister images older than 30 days, delete their
snapshots) on the same estate (N images, 8 apps, one build a day per app, all old), so
they must delete the same set; any difference is printed as a FINDING.

plain: for each tool and run, a fresh emulator, a dry run (which must change nothing),
then the real run. Prints medians of wall time, peak memory, what was deleted, and
where the real run's time went: CPU seconds of the tool and of the emulator.

throttled: for each tool and run, a fresh emulator behind scripts/throttle_proxy.py
(EC2's token buckets, refill rates times K), real run only. Prints completion time
against the buckets' floor (the least time the required DeregisterImage and
DeleteSnapshot calls can take), throttled responses, failed or abandoned deletions,
and the tool's exit status. ami-sweeper is given its default client rates times K.
`--latency MS` makes the proxy hold every EC2 call MS milliseconds, to model a remote
endpoint's round trip (an assumption; the emulator answers on loopback in milliseconds).
Run it with a Python that has boto3 (the peers' virtualenv).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import boto3

import emulator
from throttle_proxy import BUCKETS
from bench_sweep import seed

ROLE = "arn:aws:iam::123456789012:role/bench"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cmd, env, stdin=None, timeout=None):
    """Runs a tool (killed after `timeout` s); returns wall s, peak RSS MiB, CPU s, exit
    code and output."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        if stdin:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        killer = threading.Timer(timeout, proc.kill) if timeout else None
        if killer:
            killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        if killer:
            killer.cancel()
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    return {"wall": wall, "rss": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime,
            "code": os.waitstatus_to_exitcode(status), "output": text}


def state(endpoint):
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2 = boto3.client("ec2", **kw)
    images = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    return images, snaps


def commands(args, tmp, scale=None):
    """(dry run, real run, stdin for the dry run) per tool. On the plain emulator,
    ami-sweeper also runs without its launch-permission check (one DescribeImageAttribute
    per condemned image, which the peers do not make), to compare the same calls."""
    policy = os.path.join(tmp, "policy.json")
    with open(policy, "w") as f:
        json.dump({"dry_run": False, "retention": {"min_age_days": 30}}, f)
    unchecked = os.path.join(tmp, "policy-unchecked.json")
    with open(unchecked, "w") as f:
        json.dump({"dry_run": False, "retention": {"min_age_days": 30},
                   "protection": {"skip_shared": False}}, f)
    c7n_policy = os.path.join(tmp, "custodian.yml")
    with open(c7n_policy, "w") as f:
        f.write("policies:\n- name: ami-cleanup\n  resource: ami\n  filters:\n"
                "    - type: image-age\n      days: 30\n"
                "  actions:\n    - type: deregister\n      delete-snapshots: true\n")
    if scale is None:
        # The emulator does not throttle: lift the client-side limits so the figures
        # show the work, not the wait.
        rates = ["--rate", "1000", "--describe-rate", "1000", "--retry-delay", "1"]
    else:
        rates = ["--rate", str(5 * scale), "--describe-rate", str(15 * scale),
                 "--retry-delay", str(max(1, round(15 / scale)))]
    sweep = [args.sweeper, "sweep", "--policy", policy, "--format", "json"] + rates
    sweep_unchecked = [args.sweeper, "sweep", "--policy", unchecked, "--format", "json"] + rates
    c7n = [args.custodian, "run", "--cache-period", "0", "-r", "us-east-1", "--assume", ROLE]
    cleaner = [args.amicleaner, "--mapping-key", "tags", "--mapping-values", "app",
               "--keep-previous", "0", "--ami-min-days", "30"]
    tools = {
        "ami-sweeper": (sweep + ["--dry-run"], sweep, None),
        "  no share check": (sweep_unchecked + ["--dry-run"], sweep_unchecked, None),
        "cloud-custodian": (c7n + ["--dryrun", "-s", os.path.join(tmp, "c7n-dry"), c7n_policy],
                            c7n + ["-s", os.path.join(tmp, "c7n"), c7n_policy], None),
        "aws-amicleaner": (cleaner, cleaner + ["-f"], "n\n"),
    }
    wanted = {"ami-sweeper", *args.tools.split(",")}
    if scale is None:
        wanted.add("  no share check")
    return {k: v for k, v in tools.items() if k in wanted}


def check(name, r):
    if r["code"] != 0:
        raise RuntimeError(f"{name} exited {r['code']}: {r['output'][-1500:]}")


def plain(args, seed_path, tmp):
    results, deleted = {}, {}
    for name, (dry_cmd, real_cmd, dry_stdin) in commands(args, tmp).items():
        for _ in range(args.runs):
            server, upstream = emulator.start(args.moto, seed_path)
            # ami-sweeper needs the emulator's front door (it answers what moto lacks:
            # DescribeImageReferences, the Recycle Bin's rules); the peers ask for none of
            # that and talk to moto directly. The front door's per-call cost (a Python proxy)
            # therefore counts against ami-sweeper alone: the comparison errs against it.
            front, endpoint = emulator.start_proxy(upstream, 1, throttle=False)
            try:
                tool_endpoint = endpoint if name.strip() in ("ami-sweeper", "no share check") else upstream
                env = emulator.client_env(tool_endpoint)
                images0, snaps0 = state(endpoint)
                dry = run(dry_cmd, env, dry_stdin)
                check(name, dry)
                if state(endpoint) != (images0, snaps0):
                    print(f"FINDING: {name}'s dry run changed the account")
                moto_cpu = cpu_seconds(server.pid)
                real = run(real_cmd, env)
                check(name, real)
                real["moto_cpu"] = cpu_seconds(server.pid) - moto_cpu
                if name.strip() in ("ami-sweeper", "no share check"):
                    real["api_calls"] = json.loads(real["output"])["api_calls"]
                images1, snaps1 = state(endpoint)
                deleted[name] = (images0 - images1, snaps0 - snaps1)
                results.setdefault(name, []).append((dry, real))
            finally:
                emulator.stop(front)
                emulator.stop(server)
    med = lambda rs, i, k: statistics.median(r[i][k] for r in rs)
    base = med(results["ami-sweeper"], 1, "wall")
    print(f"\n== plain: {args.images} emulated images, {args.runs} runs per tool, medians "
          f"({os.cpu_count()} cores); wall time includes the emulator's own per-call cost")
    print(f"{'tool':<16} {'dry s':>6} {'dry MiB':>8} {'real s':>7} {'real MiB':>9} {'tool CPU s':>10} "
          f"{'moto CPU s':>10} {'images':>7} {'snaps':>6} {'real vs ami-sweeper':>20}")
    for name, rs in results.items():
        imgs, snaps = deleted[name]
        print(f"{name:<16} {med(rs, 0, 'wall'):>6.1f} {max(r[0]['rss'] for r in rs):>8.1f} "
              f"{med(rs, 1, 'wall'):>7.1f} {max(r[1]['rss'] for r in rs):>9.1f} "
              f"{med(rs, 1, 'cpu'):>10.1f} {med(rs, 1, 'moto_cpu'):>10.1f} {len(imgs):>7} "
              f"{len(snaps):>6} {med(rs, 1, 'wall') / base:>19.2f}x")
    calls = results["ami-sweeper"][0][1]["api_calls"]
    n = len(deleted["ami-sweeper"][0])
    print(f"ami-sweeper API calls (real run): {calls}; minimum: 1 page of each listing, "
          f"{n} DescribeImageAttribute, {n} DeregisterImage, {len(deleted['ami-sweeper'][1])} "
          "DeleteSnapshot")
    # Image ids come from the seed and match across emulators; snapshot ids are new in
    # every emulator, so snapshots are compared by count.
    ref_imgs, ref_snaps = deleted["ami-sweeper"]
    for name, (imgs, snaps) in deleted.items():
        if name != "ami-sweeper" and (imgs != ref_imgs or len(snaps) != len(ref_snaps)):
            print(f"FINDING: {name} deleted {len(imgs ^ ref_imgs)} images differently and "
                  f"{len(snaps)} snapshots against ami-sweeper's {len(ref_snaps)}")


def floor_seconds(needed: dict, scale: float) -> float:
    """The least time EC2's buckets allow for `needed` calls per bucket: each bucket
    starts full, then refills at its rate; buckets drain in parallel."""
    return max(max(0, n - BUCKETS[b][0]) / (BUCKETS[b][1] * scale) for b, n in needed.items())


def throttled(args, seed_path, tmp):
    n = args.throttled_images
    floor = floor_seconds({"deregister_image": n, "delete_snapshot": n}, args.scale)
    timeout = 3 * floor + 300
    rows = {}
    for name, (_, real_cmd, _) in commands(args, tmp, args.scale).items():
        for _ in range(args.runs):
            server, upstream = emulator.start(args.moto, seed_path)
            proxy, endpoint = emulator.start_proxy(upstream, args.scale, args.latency)
            try:
                images0, snaps0 = state(upstream)
                moto_cpu = cpu_seconds(server.pid)
                started = time.time()
                r = run(real_cmd, emulator.client_env(endpoint), timeout=timeout)
                r["moto_cpu"] = cpu_seconds(server.pid) - moto_cpu
                images1, snaps1 = state(upstream)
                snapshot = emulator.proxy_stats(endpoint)
                stats, windows = snapshot["actions"], snapshot["buckets"]
                since = lambda b, k: windows[b][k] - started if b in windows else float("nan")
                r["first_dereg"] = since("deregister_image", "first")
                r["last_delete"] = since("delete_snapshot", "last")
                r["throttled"] = sum(a["throttled"] for a in stats.values())
                r["accepted"] = {k: a["accepted"] for k, a in stats.items()}
                r["left_images"] = len(images1)
                r["left_snaps"] = len(snaps1)
                if name == "ami-sweeper" and r["code"] in (0, 1):
                    rep = json.loads(r["output"])
                    r["failures"] = rep["totals"]["failures"]
                rows.setdefault(name, []).append(r)
            finally:
                emulator.stop(proxy)
                emulator.stop(server)
    print(f"\n== throttled: {n} emulated images behind EC2's token buckets, refill rates x{args.scale:g} "
          f"(time scale), {args.latency:g} ms added per EC2 call, {args.runs} runs per tool, medians")
    print(f"   floor: {n} DeregisterImage and {n} DeleteSnapshot through buckets of 100 "
          f"refilled at {5 * args.scale:g}/s = {floor:.1f} s"
          + (" (the buckets hold every call: no floor)" if not floor else ""))
    print(f"{'tool':<16} {'real s':>7} {'vs floor':>9} {'throttled':>10} {'images left':>12} "
          f"{'snaps left':>11} {'exit':>5} {'tool CPU s':>10} {'moto CPU s':>10} "
          f"{'1st dereg at':>12} {'last delete at':>14} {'vs ami-sweeper':>15}")
    base = statistics.median(r["wall"] for r in rows["ami-sweeper"])
    for name, rs in rows.items():
        wall = statistics.median(r["wall"] for r in rs)
        vs_floor = f"{wall / floor:>8.2f}x" if floor else f"{'(none)':>9}"
        print(f"{name:<16} {wall:>7.1f} {vs_floor} "
              f"{statistics.median(r['throttled'] for r in rs):>10.0f} "
              f"{max(r['left_images'] for r in rs):>12} {max(r['left_snaps'] for r in rs):>11} "
              f"{','.join(sorted({str(r['code']) for r in rs})):>5} "
              f"{statistics.median(r['cpu'] for r in rs):>10.1f} "
              f"{statistics.median(r['moto_cpu'] for r in rs):>10.1f} "
              f"{statistics.median(r['first_dereg'] for r in rs):>11.1f}s "
              f"{statistics.median(r['last_delete'] for r in rs):>13.1f}s "
              f"{wall / base:>14.2f}x")
        for r in rs:
            if r["code"] not in (0,):
                print(f"   {name} exit {r['code']}: {r['output'].strip().splitlines()[-1][:150] if r['output'].strip() else ''}")
    sweeper = rows["ami-sweeper"]
    print(f"ami-sweeper accepted calls per action (first run): {sweeper[0]['accepted']}")


def main():
    ap = argparse.ArgumentParser()
    for a in ("sweeper", "moto", "custodian", "amicleaner"):
        ap.add_argument(a)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--throttled-images", type=int, default=1000)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--latency", type=float, default=0.0,
                    help="ms the proxy adds to every EC2 call in the throttled part")
    ap.add_argument("--only", choices=["plain", "throttled"])
    ap.add_argument("--tools", default="ami-sweeper,cloud-custodian,aws-amicleaner",
                    help="comma-separated subset (ami-sweeper always runs: it is the baseline)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ami-sweeper-bench-")
    for part in ("plain", "throttled"):
        if args.only in (None, part):
            n = args.images if part == "plain" else args.throttled_images
            seed_path = os.path.join(tmp, f"amis-{n}.json")
            with open(seed_path, "w") as f:
                json.dump(seed(n), f)
            (plain if part == "plain" else throttled)(args, seed_path, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
