#!/usr/bin/env python3
"""ami-sweeper beside c7n-org over an organization (`make bench-org`; results in
BENCHMARKS.md).

usage: bench_org.py AMI_SWEEPER MOTO_PYTHON C7N_ORG [--accounts M] [--images N]
                    [--shape F] [--latency MS] [--runs R] [--tools told,untold,c7n-org]

M member accounts x 2 Regions, N old images (one snapshot each) in every pair, on the
emulator (scripts/moto_accounts.py: each account its own images; the accounts spread over
a few moto processes, see `Emulators`) behind scripts/throttle_proxy.py, which keeps one
set of EC2's token buckets per (account, Region) at F times EC2's sizes and refills and
holds every EC2 call MS milliseconds.
Every tool gets the same rule (deregister the images older than 30 days, delete their
snapshots) through the same member role, and a fresh emulator:

- told: ami-sweeper with `limits.api_share` F (it knows the share it may use);
- untold: ami-sweeper at its defaults (its pacers must find the rate);
- c7n-org: Cloud Custodian's organization runner, the equivalent policy, boto3's retries.

Prints wall time, its ratio to the slowest pair's floor (the least time the pair's
buckets allow its DeregisterImage and DeleteSnapshot calls), throttled calls, failures
and what is left in the emulator (checked per pair, every image and snapshot).
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
from bench import run
from bench_sweep import seed
from throttle_proxy import BUCKETS

REGIONS = ["us-east-1", "eu-west-1"]
ROLE = "ami-sweeper-bench"


def accounts(m: int) -> list:
    return ["%012d" % (210000000000 + i) for i in range(1, m + 1)]


def estate(ids: list, n: int) -> list:
    """N old images per account (each appears in every Region)."""
    out = []
    for k, account in enumerate(ids):
        for image in seed(n, first=k * n):
            image["owner_id"] = account
            out.append(image)
    return out


# At most this many emulator processes for the member accounts (the hub has one more of its
# own), the accounts dealt round-robin. On 2 cores, ten (one per account) made every pair's
# start slower (eleven Python processes contending); four answer in 30-300 ms.
MEMBER_EMULATORS = 4


class Emulators:
    """The organization's emulator, as AWS answers each account on its own: the hub's moto
    process (the deployment's own account: its queues, its reports) and the member accounts
    spread over up to MEMBER_EMULATORS more, each holding only its accounts' images. The
    front door sends each account's requests to its process (`routes()`). One Python
    process answering twenty pairs' calls was saturated on this machine (0.4-1.5 s an
    answer where the same calls of six pairs took 8-76 ms: BENCHMARKS.md section 12), a
    cost of the emulator, not of EC2, that every tool paid alike."""

    def __init__(self, moto_python: str, seed_path: str, ids: list):
        with open(seed_path, encoding="utf-8") as f:
            seed = json.load(f)
        groups = [ids[i::MEMBER_EMULATORS] for i in range(min(MEMBER_EMULATORS, len(ids)))]
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_accounts.py")
        self.procs, self.of, started, ports = [], {}, [], set()
        for k, accounts in enumerate([[]] + groups):
            path = f"{seed_path}.{k}"
            with open(path, "w", encoding="utf-8") as f:
                json.dump([a for a in seed if a.get("owner_id") in accounts], f)
            port = emulator.free_port()
            while port in ports:
                port = emulator.free_port()
            ports.add(port)
            proc = subprocess.Popen([moto_python, script, path, "-H", "127.0.0.1", "-p", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(proc)
            started.append((proc, f"http://127.0.0.1:{port}", accounts))
        for proc, endpoint, accounts in started:
            emulator.wait_for(proc, endpoint)
            self.of.update({a: endpoint for a in accounts})
        self.hub = started[0][1]
        warmers = [threading.Thread(target=warm, args=(e,)) for _, e, _ in started]
        for w in warmers:
            w.start()
        for w in warmers:
            w.join()

    def url(self, account: str) -> str:
        """The emulator answering for `account` (the hub's for any other)."""
        return self.of.get(account, self.hub)

    def routes(self) -> list:
        """The front door's arguments that send each member account to its process."""
        return [arg for a, u in sorted(self.of.items()) for arg in ("--route", f"{a}={u}")]

    def stop(self) -> None:
        for proc in self.procs:
            emulator.stop(proc)


def warm(endpoint: str) -> None:
    """One read of every service the tools call, before any clock starts: a moto process
    imports a service's code and builds its web app on that service's first request
    (0.02-0.4 s of CPU each, about 0.9 s for the seven; later calls, in any account or
    Region, answer in milliseconds). With every process doing that at once in the first
    seconds of a timed run, every pair's first calls waited about a second for a cost AWS
    does not have."""
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="testing", aws_secret_access_key="testing")
    boto3.client("sts", **kw).get_caller_identity()
    boto3.client("ec2", **kw).describe_images(Owners=["self"])
    boto3.client("autoscaling", **kw).describe_auto_scaling_groups()
    boto3.client("ssm", **kw).describe_parameters()
    boto3.client("cloudformation", **kw).describe_stacks()
    boto3.client("emr", **kw).list_clusters()
    boto3.client("batch", **kw).describe_compute_environments()


def pair_ec2(url_of, ids: list):
    """Every pair's EC2 client on the emulator (`url_of(account)`), as its member role:
    yields ("account/region", client)."""
    for account in ids:
        upstream = url_of(account)
        sts = boto3.client("sts", endpoint_url=upstream, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{ROLE}",
                            RoleSessionName="check")["Credentials"]
        for region in REGIONS:
            yield f"{account}/{region}", boto3.client(
                "ec2", endpoint_url=upstream, region_name=region,
                aws_access_key_id=c["AccessKeyId"],
                aws_secret_access_key=c["SecretAccessKey"],
                aws_session_token=c["SessionToken"])


def left(url_of, ids: list) -> dict:
    """Images and snapshots left per pair, read straight from the emulator."""
    out = {}
    for pair, ec2 in pair_ec2(url_of, ids):
        images = ec2.describe_images(Owners=["self"])["Images"]
        snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        out[pair] = (len(images), len(snaps))
    return out


def commands(args, tmp, ids):
    base = {"dry_run": False, "retention": {"min_age_days": 30}, "regions": REGIONS,
            "accounts": ids, "member_role_name": ROLE}
    told = dict(base, limits={"api_share": args.shape})
    paths = {}
    for name, policy in (("told", told), ("untold", base)):
        paths[name] = os.path.join(tmp, f"policy-{name}.json")
        with open(paths[name], "w") as f:
            json.dump(policy, f)
    # At its defaults: every pair at once, up to the bound the machine sets.
    sweep = lambda p: [args.sweeper, "sweep", "--policy", p, "--format", "json"]
    c7n_accounts = os.path.join(tmp, "accounts.yml")
    with open(c7n_accounts, "w") as f:
        f.write("accounts:\n")
        for i, a in enumerate(ids):
            f.write(f"- account_id: '{a}'\n  name: member-{i}\n"
                    f"  role: arn:aws:iam::{a}:role/{ROLE}\n"
                    f"  regions: [{', '.join(REGIONS)}]\n")
    c7n_policy = os.path.join(tmp, "custodian.yml")
    with open(c7n_policy, "w") as f:
        f.write("policies:\n- name: ami-cleanup\n  resource: ami\n  filters:\n"
                "    - type: image-age\n      days: 30\n"
                "  actions:\n    - type: deregister\n      delete-snapshots: true\n")
    c7n = [args.c7n_org, "run", "-c", c7n_accounts, "-u", c7n_policy,
           "-s", os.path.join(tmp, "c7n-out"), "--cache-period", "0"]
    for r in REGIONS:
        c7n += ["-r", r]
    tools = {"told": sweep(paths["told"]), "untold": sweep(paths["untold"]), "c7n-org": c7n}
    return {k: v for k, v in tools.items() if k in args.tools.split(",")}


def floor_seconds(n: int, shape: float) -> float:
    """One pair's floor: N DeregisterImage and N DeleteSnapshot through buckets of
    `shape` times EC2's, draining in parallel (every pair has the same N)."""
    return max(max(0.0, n - round(BUCKETS[b][0] * shape)) / (BUCKETS[b][1] * shape)
               for b in ("deregister_image", "delete_snapshot"))


def one_run(args, name, cmd, seed_path, ids, inspect=None):
    """One tool's run on a fresh emulator; `inspect(url_of, "before" | "after")`, when
    given, reads the emulator around it (bench_fanout.py's checks)."""
    emu = Emulators(args.moto_python, seed_path, ids)
    proxy, endpoint = emulator.start_proxy(emu.hub, 1, args.latency,
                                           extra=["--shape", str(args.shape),
                                                  "--upstream-concurrency", "4"] + emu.routes())
    try:
        before = left(emu.url, ids)
        if inspect:
            inspect(emu.url, "before")
        # c7n-org runs every pair at once, as ami-sweeper does at its defaults.
        env = dict(emulator.client_env(endpoint), C7N_ORG_PARALLEL=str(len(ids) * len(REGIONS)))
        t0 = time.time()
        r = run(cmd, env, timeout=1800)
        stats = emulator.proxy_stats(endpoint)
        # Where the time went: each bucket's first and last accepted call, from the start.
        r["windows"] = {b: (w["first"] - t0, w["last"] - t0)
                        for b, w in stats.get("buckets", {}).items()}
        r["upstream"] = {a: v["upstream_s"] for a, v in stats["actions"].items()}
        r["throttled"] = sum(a["throttled"] for a in stats["actions"].values())
        r["actions"] = stats["actions"]
        r["pairs"] = stats.get("pairs", {})
        r["before"] = before
        r["left"] = left(emu.url, ids)
        if inspect:
            inspect(emu.url, "after")
        r["failures"] = None
        r["rates"] = {}
        if name != "c7n-org" and r["code"] in (0, 1):
            rep = json.loads(r["output"])
            r["failures"] = rep["failures"]
            for p in rep["pairs"]:
                for reg in (p.get("report") or {}).get("regions", []):
                    for b, pr in reg.get("pacing", {}).items():
                        r["rates"].setdefault(b, []).append(pr["end_per_second"])
        return r
    finally:
        emulator.stop(proxy)
        emu.stop()


def main():
    ap = argparse.ArgumentParser()
    for a in ("sweeper", "moto_python", "c7n_org"):
        ap.add_argument(a)
    ap.add_argument("--accounts", type=int, default=3)
    ap.add_argument("--images", type=int, default=60, help="old images per (account, Region)")
    ap.add_argument("--shape", type=float, default=0.2)
    ap.add_argument("--latency", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tools", default="told,untold,c7n-org")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ami-sweeper-bench-org-")
    ids = accounts(args.accounts)
    seed_path = os.path.join(tmp, "amis.json")
    with open(seed_path, "w") as f:
        json.dump(estate(ids, args.images), f)
    pairs = len(ids) * len(REGIONS)
    floor = floor_seconds(args.images, args.shape)
    rows = {}
    for name, cmd in commands(args, tmp, ids).items():
        for _ in range(args.runs):
            rows.setdefault(name, []).append(one_run(args, name, cmd, seed_path, ids))
    total = pairs * args.images
    print(f"\n== organization: {args.accounts} accounts x {len(REGIONS)} Regions = {pairs} pairs, "
          f"{args.images} old images each ({total} in all); buckets x{args.shape:g} of EC2's per "
          f"pair, {args.latency:g} ms per EC2 call; {args.runs} run(s) per tool, medians")
    print(f"   slowest pair's floor: {args.images} DeregisterImage and DeleteSnapshot through "
          f"buckets of {round(100 * args.shape)} refilled at {5 * args.shape:g}/s = {floor:.1f} s")
    print(f"{'tool':<8} {'wall s':>7} {'vs floor':>9} {'throttled':>10} {'failures':>9} "
          f"{'images left':>12} {'snaps left':>11} {'exit':>5} {'tool CPU s':>10}  end rates (min-max per pair)")
    for name, rs in rows.items():
        wall = statistics.median(r["wall"] for r in rs)
        imgs = max(sum(v[0] for v in r["left"].values()) for r in rs)
        snaps = max(sum(v[1] for v in r["left"].values()) for r in rs)
        fails = [r["failures"] for r in rs if r["failures"] is not None]
        rates = rs[0]["rates"]
        rate_text = ", ".join(f"{b} {min(v):.2f}-{max(v):.2f}" for b, v in sorted(rates.items()))
        vs = f"{wall / floor:>8.2f}x" if floor else f"{'(none)':>9}"
        print(f"{name:<8} {wall:>7.1f} {vs} "
              f"{statistics.median(r['throttled'] for r in rs):>10.0f} "
              f"{(max(fails) if fails else '-'):>9} {imgs:>12} {snaps:>11} "
              f"{','.join(sorted({str(r['code']) for r in rs})):>5} "
              f"{statistics.median(r['cpu'] for r in rs):>10.1f}  {rate_text}")
        for r in rs:
            before = sum(v[0] for v in r["before"].values())
            if before != total:
                print(f"   FINDING: the emulator held {before} images before the run, not {total}")
            if r["code"] != 0 or os.environ.get("BENCH_VERBOSE"):
                tail = r["output"].strip().splitlines()[-1][:200] if r["output"].strip() else ""
                print(f"   {name} exit {r['code']}: {tail}")
        if os.environ.get("BENCH_VERBOSE"):
            print(f"   {name} runs (wall s): " + ", ".join(f"{r['wall']:.1f}" for r in rs))
            for r in rs:
                print("   windows (s from start): " + ", ".join(
                    f"{b} {f:.1f}-{l:.1f}" for b, (f, l) in sorted(r["windows"].items())))
        print(f"   {name} throttled per pair: "
              + ", ".join(f"{p} {c['throttled']}" for p, c in sorted(rs[0]["pairs"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
