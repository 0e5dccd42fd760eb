#!/usr/bin/env python3
"""The deployed path, timed on this machine (`make bench-fanout`; results in BENCHMARKS.md).

usage: bench_fanout.py AMI_SWEEPER MOTO_PYTHON [--template template.yaml] [--accounts M]
                       [--images N] [--shape F] [--latency MS] [--rows a,b]
                       [--backlog-timeout S] [--backlog-images N] [--poll S]
                       [--param NAME=VALUE ...]

The real release binary in Lambda mode, as process copies each behind its own local
Runtime API served here (`/2018-06-01/runtime/invocation/next`, `/response`, `/error`,
the deadline header from the function's Timeout), one pool per function of `template.yaml`
(hub sweeper, pair sweeper, cleanup worker), a copy started when an invocation finds every
copy busy, up to the function's concurrency. A stand-in for Lambda's SQS event source
mappings reads its settings from the template (parsed with its CloudFormation tags):
BatchSize, MaximumBatchingWindowInSeconds, ScalingConfig.MaximumConcurrency,
FunctionResponseTypes, the functions' Timeout and ReservedConcurrentExecutions, the
queues' VisibilityTimeout, DelaySeconds, RedrivePolicy and FifoQueue (the queues are made
on the emulator with exactly those attributes, so the emulator's SQS redrives to the DLQ
after maxReceiveCount) and the parameters' defaults (PairConcurrency); it prints them. The
emulator and its front door are `make bench-org`'s (scripts/bench_org.py: one moto for
every account, per-(account, Region) buckets at F times EC2's, MS ms per EC2 call).

Rows: (a) M accounts x 2 Regions x N condemned images, from the schedule event to the last
snapshot deleted, and `make bench-org`'s CLI run (ami-sweeper at its defaults) of the same
estate on the same front door; (b) one pair whose backlog is three invocations' worth of
the pair sweeper shortened to --backlog-timeout seconds (continuation); (c) the model for
100 accounts x 4 Regions x 60 images and a first deployment of 400 pairs x 1,000 images,
from (a)'s per-pair figures and the template's settings. Every pair also holds two young
images (kept by the policy's 30 days): after each row the emulator is checked (every
condemned image and snapshot gone, every kept one there, zero failures, dead-letter queues
empty); a row that fails prints FAIL and the script exits 1. Run it with the emulator's
virtualenv Python (boto3, PyYAML).
"""
import argparse
import http.server
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from types import SimpleNamespace

import boto3
import yaml

import bench_org
import emulator
from bench import run
from throttle_proxy import BUCKETS

HUB = "123456789012"
KEPT_PER_ACCOUNT = 2


# ---------------------------------------------------------------- the template

class CfnLoader(yaml.SafeLoader):
    """PyYAML with CloudFormation's short tags: `!Ref X` becomes {"Ref": X}, `!GetAtt
    A.B` {"Fn::GetAtt": [A, B]}, any other `!Fn` {"Fn::Fn": value}."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _tag)


class Template:
    """The template's resources, parameters (defaults, overridden by --param) and
    conditions, with an evaluator for the intrinsic functions its function settings use."""

    def __init__(self, path: str, params: dict, refs: dict):
        with open(path) as f:
            self.doc = yaml.load(f, Loader=CfnLoader)
        self.resources = self.doc["Resources"]
        self.params = {k: v.get("Default", "") for k, v in self.doc["Parameters"].items()}
        self.params.update(params)
        self.refs = refs  # logical id -> physical value (queue URL, bucket name, ...)
        self.attrs = {}  # (logical id, attribute) -> value

    def value(self, node):
        if isinstance(node, (str, int, float, bool)) or node is None:
            return node
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if len(node) != 1:
            return {k: self.value(v) for k, v in node.items()}
        (fn, arg), = node.items()
        if fn == "Ref":
            if arg in self.params:
                p = self.params[arg]
                kind = self.doc["Parameters"][arg].get("Type", "String")
                return [x for x in str(p).split(",") if x] if kind == "CommaDelimitedList" else p
            return {"AWS::AccountId": HUB, "AWS::Region": "us-east-1",
                    "AWS::Partition": "aws", "AWS::NoValue": None}.get(arg, self.refs.get(arg))
        if fn == "Fn::GetAtt":
            return self.attrs.get(tuple(arg))
        if fn == "Fn::Join":
            sep, items = arg
            items = self.value(items)
            flat = []
            for i in items if isinstance(items, list) else [items]:
                flat += i if isinstance(i, list) else [i]
            return sep.join(str(i) for i in flat)
        if fn == "Fn::If":
            name, yes, no = arg
            return self.value(yes if self.condition(name) else no)
        if fn == "Fn::Select":
            return self.value(arg[1])[int(self.value(arg[0]))]
        if fn == "Fn::Split":
            return str(self.value(arg[1])).split(arg[0])
        if fn == "Fn::Equals":
            return self.value(arg[0]) == self.value(arg[1])
        if fn == "Fn::Not":
            return not self.value(arg[0])
        if fn == "Fn::And":
            return all(self.value(a) for a in arg)
        if fn == "Fn::Or":
            return any(self.value(a) for a in arg)
        if fn in ("Condition", "Fn::Condition"):
            return self.condition(arg)
        raise ValueError(f"intrinsic {fn} is not modelled by the harness")

    def condition(self, name: str) -> bool:
        return bool(self.value(self.doc["Conditions"][name]))

    def queues(self) -> dict:
        return {k: r.get("Properties", {}) for k, r in self.resources.items()
                if r["Type"] == "AWS::SQS::Queue"}

    def functions(self) -> dict:
        return {k: r["Properties"] for k, r in self.resources.items()
                if r["Type"] == "AWS::Serverless::Function"}

    def memory(self, props: dict) -> int:
        return props.get("MemorySize", self.doc["Globals"]["Function"].get("MemorySize", 128))


def make_queues(t: Template, sqs) -> dict:
    """Each queue of the template on the emulator, with the template's attributes (its
    dead-letter queues first); fills `t.refs` and `t.attrs`. Returns the settings read."""
    qs = t.queues()
    order = sorted(qs, key=lambda k: "RedrivePolicy" in qs[k])
    settings = {}
    for name in order:
        props = qs[name]
        fifo = bool(t.value(props.get("FifoQueue", False)))
        attrs = {}
        for key in ("VisibilityTimeout", "DelaySeconds", "MessageRetentionPeriod"):
            if key in props:
                attrs[key] = str(t.value(props[key]))
        if fifo:
            attrs["FifoQueue"] = "true"
            if props.get("ContentBasedDeduplication"):
                attrs["ContentBasedDeduplication"] = "true"
        redrive = props.get("RedrivePolicy")
        if redrive:
            redrive = {"deadLetterTargetArn": t.value(redrive["deadLetterTargetArn"]),
                       "maxReceiveCount": int(t.value(redrive["maxReceiveCount"]))}
            attrs["RedrivePolicy"] = json.dumps(redrive)
        qname = f"{name}-{uuid.uuid4().hex[:6]}" + (".fifo" if fifo else "")
        url = sqs.create_queue(QueueName=qname, Attributes=attrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        t.refs[name] = url
        t.attrs[(name, "Arn")] = arn
        t.attrs[(name, "QueueName")] = qname
        settings[name] = {"url": url, "fifo": fifo,
                          "visibility_timeout": int(attrs.get("VisibilityTimeout", 30)),
                          "delay_seconds": int(attrs.get("DelaySeconds", 0)),
                          "max_receive_count": redrive["maxReceiveCount"] if redrive else None,
                          "dead_letter": next((k for k, v in t.attrs.items()
                                               if redrive and v == redrive["deadLetterTargetArn"]),
                                              (None,))[0]}
    return settings


def function_settings(t: Template, queues: dict, timeout_override: dict) -> dict:
    """Per function: its environment (the template's, resolved), Timeout, concurrency, and
    its SQS event source mapping if it has one."""
    out = {}
    for name, props in t.functions().items():
        env = {k: t.value(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()}
        env = {k: ("" if v is None else str(v)) for k, v in env.items()}
        reserved = props.get("ReservedConcurrentExecutions")
        f = {"env": env, "timeout": int(timeout_override.get(name, t.value(props.get("Timeout", 3)))),
             "template_timeout": int(t.value(props.get("Timeout", 3))),
             "memory": t.memory(props), "reserved": int(reserved) if reserved is not None else None,
             "mapping": None, "schedule": False}
        for ev in props.get("Events", {}).values():
            p = ev.get("Properties", {})
            if ev["Type"] == "Schedule":
                f["schedule"] = True
            if ev["Type"] == "SQS":
                arn = t.value(p["Queue"])
                qname = next(k for k, v in t.attrs.items() if k[1] == "Arn" and v == arn)[0]
                scaling = p.get("ScalingConfig", {})
                f["mapping"] = {
                    "queue": qname,
                    "batch_size": int(t.value(p.get("BatchSize", 10))),
                    "window": float(t.value(p.get("MaximumBatchingWindowInSeconds", 0))),
                    "partial": "ReportBatchItemFailures" in (p.get("FunctionResponseTypes") or []),
                    "max_concurrency": int(t.value(scaling["MaximumConcurrency"]))
                    if "MaximumConcurrency" in scaling else None,
                }
        caps = [c for c in (f["reserved"], (f["mapping"] or {}).get("max_concurrency")) if c]
        f["concurrency"] = min(caps) if caps else 1000
        out[name] = f
    return out


def print_settings(functions: dict, queues: dict, params: dict, poll: float) -> None:
    print("   settings read from template.yaml:")
    for name, f in functions.items():
        m = f["mapping"]
        line = (f"     {name}: Timeout {f['template_timeout']} s"
                + (f" (run at {f['timeout']} s)" if f["timeout"] != f["template_timeout"] else "")
                + f", ReservedConcurrentExecutions {f['reserved']}, concurrency {f['concurrency']}")
        if m:
            line += (f"; SQS {m['queue']}: BatchSize {m['batch_size']}, "
                     f"MaximumBatchingWindowInSeconds {m['window']:g}, MaximumConcurrency "
                     f"{m['max_concurrency']}, partial batch failures {m['partial']}")
        if f["schedule"]:
            line += "; schedule event"
        print(line)
    for name, q in queues.items():
        print(f"     {name}: VisibilityTimeout {q['visibility_timeout']} s, DelaySeconds "
              f"{q['delay_seconds']}, FIFO {q['fifo']}"
              + (f", maxReceiveCount {q['max_receive_count']} to {q['dead_letter']}"
                 if q["max_receive_count"] else ""))
    print("     parameters: " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())
                                         if k in ("PairConcurrency", "ForceDryRun")))
    print(f"   the event source stand-in polls each queue every {poll * 1000:g} ms while it has "
          "a free copy (Lambda long-polls; the emulator's SQS answers in about a millisecond)")


# ---------------------------------------------------------------- the Runtime API

class Copy:
    """One process copy of the binary behind its own Runtime API."""

    def __init__(self, exe: str, fn: str, settings: dict, base_env: dict, log_dir: str):
        self.fn, self.timeout = fn, settings["timeout"]
        self.pending = queue.Queue()
        self.result = None
        self.done = threading.Event()
        copy = self

        class Api(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    return self.reply(404)
                rid, event, deadline_ms = copy.pending.get()
                self.reply(200, event, [
                    ("Lambda-Runtime-Aws-Request-Id", rid),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                    ("Lambda-Runtime-Invoked-Function-Arn",
                     f"arn:aws:lambda:us-east-1:{HUB}:function:{copy.fn}"),
                    ("Lambda-Runtime-Trace-Id", "Root=1-0-0"),
                    ("Content-Type", "application/json")])

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.reply(202, b"{}")
                kind = self.path.rsplit("/", 1)[-1]
                if kind in ("response", "error"):
                    copy.result = (kind, body)
                    copy.done.set()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        env = dict(base_env, **settings["env"],
                   AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}", AWS_LAMBDA_FUNCTION_NAME=fn,
                   AWS_LAMBDA_FUNCTION_VERSION="1",
                   AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(settings["memory"]))
        self.log = open(os.path.join(log_dir, f"{fn}-{port}.log"), "wb")
        self.proc = subprocess.Popen([exe], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def invoke(self, event: dict):
        """One invocation: ('response' | 'error', body) or ('timeout', None), when the
        function did not answer by its deadline (the copy is then killed, as Lambda does)."""
        self.done.clear()
        deadline = time.time() + self.timeout
        self.pending.put((str(uuid.uuid4()), json.dumps(event).encode(), int(deadline * 1000)))
        if not self.done.wait(self.timeout + 1):
            self.stop()
            return "timeout", None
        return self.result

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.server.shutdown()
        self.server.server_close()
        self.log.close()


class Pool:
    """A function's copies: an idle one is reused, a new one started when all are busy,
    up to the function's concurrency."""

    def __init__(self, exe, fn, settings, base_env, log_dir, stats):
        self.args = (exe, fn, settings, base_env, log_dir)
        self.cap = settings["concurrency"]
        self.idle, self.all = [], []
        self.busy = 0
        self.cv = threading.Condition()
        self.stats = stats

    def acquire(self) -> "Copy":
        with self.cv:
            while not self.idle and len(self.all) >= self.cap:
                self.cv.wait()
            self.busy += 1
            if self.idle:
                return self.idle.pop()
        c = Copy(*self.args)
        with self.cv:
            self.all.append(c)
            self.stats["cold_starts"] += 1
        return c

    def release(self, c: "Copy", alive: bool):
        with self.cv:
            self.busy -= 1
            if alive:
                self.idle.append(c)
            else:
                self.all.remove(c)
            self.cv.notify()

    def invoke(self, event: dict):
        c = self.acquire()
        kind, body = c.invoke(event)
        self.release(c, kind != "timeout")
        self.stats["invocations"] += 1
        if kind != "response":
            self.stats["errors" if kind == "error" else "timeouts"] += 1
            self.stats["error_lines"].append(f"{self.args[1]} {kind}: {(body or b'')[:300]!r}")
        return kind, body

    def stop(self):
        for c in self.all:
            c.stop()


class Mapping(threading.Thread):
    """Lambda's SQS event source mapping, as the template configures it: receives up to
    BatchSize messages (waiting up to the batching window for a full batch) whenever the
    function has a free copy, invokes, deletes what succeeded (everything but the batch
    item failures with partial batch failures; nothing after an error or a timeout, so the
    messages return after the visibility timeout and redrive after maxReceiveCount)."""

    def __init__(self, sqs, pool: Pool, m: dict, q: dict, arn: str, poll: float):
        super().__init__(daemon=True)
        self.sqs, self.pool, self.m, self.q, self.arn, self.poll = sqs, pool, m, q, arn, poll
        self.stopping = threading.Event()
        self.in_flight = 0
        self.lock = threading.Lock()

    def receive(self, n: int) -> list:
        return self.sqs.receive_message(QueueUrl=self.q["url"], MaxNumberOfMessages=min(n, 10),
                                        AttributeNames=["All"],
                                        MessageAttributeNames=["All"]).get("Messages", [])

    def run(self):
        while not self.stopping.is_set():
            with self.pool.cv:
                free = self.pool.idle or len(self.pool.all) < self.pool.cap
            if not free:
                time.sleep(self.poll)
                continue
            batch = self.receive(self.m["batch_size"])
            if not batch:
                time.sleep(self.poll)
                continue
            until = time.time() + self.m["window"]
            while len(batch) < self.m["batch_size"] and time.time() < until:
                more = self.receive(self.m["batch_size"] - len(batch))
                batch += more
                if not more:
                    time.sleep(self.poll)
            with self.lock:
                self.in_flight += 1
            threading.Thread(target=self.deliver, args=(batch,), daemon=True).start()

    def deliver(self, batch: list):
        try:
            records = [{
                "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"], "attributes": m.get("Attributes", {}),
                "messageAttributes": {k: {"stringValue": v.get("StringValue"),
                                          "dataType": v.get("DataType", "String")}
                                      for k, v in m.get("MessageAttributes", {}).items()},
                "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
                "eventSourceARN": self.arn, "awsRegion": "us-east-1"} for m in batch]
            kind, body = self.pool.invoke({"Records": records})
            if kind != "response":
                return
            failed = set()
            if self.m["partial"]:
                answer = json.loads(body or b"{}") or {}
                failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures") or []}
            done = [m for m in batch if m["MessageId"] not in failed]
            for i in range(0, len(done), 10):
                self.sqs.delete_message_batch(QueueUrl=self.q["url"], Entries=[
                    {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]}
                    for k, m in enumerate(done[i:i + 10])])
        finally:
            with self.lock:
                self.in_flight -= 1


# ---------------------------------------------------------------- the estate and the checks

def estate(ids: list, n: int) -> list:
    """`make bench-org`'s estate (N old images per account, in every Region) and two young
    images per account that the policy keeps (their storage must survive)."""
    images = bench_org.estate(ids, n)
    young = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 86400))
    first = len(ids) * n + 1
    for k, account in enumerate(ids):
        for j in range(KEPT_PER_ACCOUNT):
            i = first + k * KEPT_PER_ACCOUNT + j
            images.append(dict(images[k * n], ami_id="ami-%017x" % i, creation_date=young,
                               snapshot_description=f"Created by CreateImage(i-0bench) for ami-{i:017x}",
                               name=f"young-{i:05d}", owner_id=account))
    return images


def inventory(url_of, ids: list) -> dict:
    """Per pair, straight from the emulator (`url_of(account)`): {image id: [its snapshot
    ids]} and every snapshot id."""
    out = {}
    for pair, ec2 in bench_org.pair_ec2(url_of, ids):
        images = {i["ImageId"]: (i.get("CreationDate", ""),
                                 [b["Ebs"]["SnapshotId"] for b in i.get("BlockDeviceMappings", [])
                                  if "Ebs" in b and "SnapshotId" in b["Ebs"]])
                  for i in ec2.describe_images(Owners=["self"])["Images"]}
        snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
        out[pair] = (images, snaps)
    return out


def condemned(before: dict, swept_regions: list) -> dict:
    """Per pair: (images and snapshots the policy condemns, those it keeps)."""
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 30 * 86400))
    out = {}
    for pair, (images, snaps) in before.items():
        swept = pair.split("/")[1] in swept_regions
        gone = {i for i, (created, _) in images.items() if swept and created[:19] < cutoff}
        gone_snaps = {s for i in gone for s in images[i][1]}
        out[pair] = (gone, gone_snaps, set(images) - gone, snaps - gone_snaps)
    return out


def check(before: dict, after: dict, swept_regions: list) -> list:
    """What is wrong after a row: condemned images or snapshots left, kept ones gone."""
    problems = []
    for pair, (gone, gone_snaps, kept, kept_snaps) in condemned(before, swept_regions).items():
        images, snaps = after[pair]
        if gone & set(images):
            problems.append(f"{pair}: {len(gone & set(images))} condemned images left")
        if gone_snaps & snaps:
            problems.append(f"{pair}: {len(gone_snaps & snaps)} condemned snapshots left")
        if kept - set(images):
            problems.append(f"{pair}: {len(kept - set(images))} KEPT images deregistered")
        if kept_snaps - snaps:
            problems.append(f"{pair}: {len(kept_snaps - snaps)} KEPT snapshots deleted")
    return problems


def floor(n: int, shape: float, latency_ms: float) -> tuple:
    """One pair's floor and its formula: N DeregisterImage calls through the pair's bucket
    (size B = 100F, refill r = 5F/s), and N DeleteSnapshot calls through the pair's own
    bucket of the same shape, each after its image's deregistration (no delay beyond that
    order: on AWS a snapshot can be InUse a moment after its image goes, which a retry
    covers, not a wait), so the last deletion comes one round trip after the last
    deregistration at the earliest."""
    (bd, rd), (bs, rs) = ([round(BUCKETS[b][0] * shape), BUCKETS[b][1] * shape]
                          for b in ("deregister_image", "delete_snapshot"))
    dereg = max(0.0, n - bd) / rd
    value = max(dereg + latency_ms / 1000, max(0.0, n - bs) / rs)
    text = (f"max(({n} - {bd}) / {rd:g} + {latency_ms / 1000:g}, ({n} - {bs}) / {rs:g}) = "
            f"{value:.1f} s")
    return value, text


# ---------------------------------------------------------------- one deployed run

def deployed(args, ids: list, regions: list, n: int, timeouts: dict, label: str) -> dict:
    """A fresh emulator behind the front door, the template's queues and functions, the
    schedule event to the hub sweeper, then the mappings until every queue is empty and
    every copy idle. Wall time to the last accepted DeleteSnapshot, per-pair windows, the
    checks."""
    tmp = tempfile.mkdtemp(prefix=f"ami-sweeper-bench-fanout-{label}-")
    seed_path = os.path.join(tmp, "amis.json")
    with open(seed_path, "w") as f:
        json.dump(estate(ids, n), f)
    emu = bench_org.Emulators(args.moto_python, seed_path, ids)
    proxy, endpoint = emulator.start_proxy(emu.hub, 1, args.latency, extra=[
        "--shape", str(args.shape), "--upstream-concurrency", "4"] + emu.routes())
    pools, mappings = {}, []
    try:
        before = inventory(emu.url, ids)
        kw = dict(endpoint_url=emu.hub, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        sqs, s3 = boto3.client("sqs", **kw), boto3.client("s3", **kw)
        bucket = f"reports-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        policy = {"dry_run": False, "retention": {"min_age_days": 30}, "regions": regions,
                  "accounts": ids, "member_role_name": bench_org.ROLE}
        params = dict(args.params, PolicyJson=json.dumps(policy), SweepRegions=",".join(regions),
                      MemberRoleName=bench_org.ROLE)
        t = Template(args.template, params, {"ReportBucket": bucket})
        queues = make_queues(t, sqs)
        functions = function_settings(t, queues, timeouts)
        print(f"\n-- row {label}: {len(ids)} accounts x {len(regions)} Regions, {n} condemned "
              f"images per pair (and {KEPT_PER_ACCOUNT} kept per account and Region)")
        print_settings(functions, queues, t.params, args.poll)
        stats = {"invocations": 0, "errors": 0, "timeouts": 0, "cold_starts": 0, "error_lines": []}
        base_env = emulator.client_env(endpoint)
        base_env.pop("AWS_DEFAULT_REGION", None)
        log_dir = os.path.join(tmp, "logs")
        os.makedirs(log_dir)
        for fn, f in functions.items():
            pools[fn] = Pool(args.sweeper, fn, f, base_env, log_dir, stats)
            if f["mapping"]:
                q = queues[f["mapping"]["queue"]]
                mappings.append(Mapping(sqs, pools[fn], f["mapping"], q,
                                        t.attrs[(f["mapping"]["queue"], "Arn")], args.poll))
        for m in mappings:
            m.start()
        hub = next(fn for fn, f in functions.items() if f["schedule"])
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "events",
                               "schedule.json")) as f:
            event = json.load(f)
        t0 = time.time()
        kind, body = pools[hub].invoke(event)
        dispatched = time.time() - t0
        finished = wait_idle(sqs, queues, mappings, pools, args.row_timeout)
        idle_at = time.time() - t0
        proxy_stats = emulator.proxy_stats(endpoint)
        after = inventory(emu.url, ids)
        problems = check(before, after, regions)
        if kind != "response":
            problems.append(f"the schedule invocation failed: {body[:300]!r}")
        if not finished:
            problems.append(f"not finished after {args.row_timeout} s")
        for name in sorted({q["dead_letter"] for q in queues.values() if q["dead_letter"]}):
            count = dead_letters(sqs, queues[name]["url"])
            if count:
                problems.append(f"{count} messages in {name}")
        failures, links = read_reports(s3, bucket)
        if failures:
            problems.append(f"{failures} failures in the pairs' reports")
        if stats["errors"] or stats["timeouts"]:
            problems.append(f"{stats['errors']} invocation errors, {stats['timeouts']} timeouts: "
                            + "; ".join(stats["error_lines"][:3]))
        buckets = proxy_stats.get("buckets", {})
        last_delete = buckets.get("delete_snapshot", {}).get("last", t0) - t0
        pairs = {p: {b: (w["first"] - t0, w["last"] - t0, w["accepted"]) for b, w in bw.items()}
                 for p, bw in proxy_stats.get("pair_buckets", {}).items()}
        return {"wall": last_delete, "dispatched": dispatched, "idle": idle_at, "stats": stats,
                "problems": problems, "pairs": pairs, "links": links, "failures": failures,
                "functions": functions, "queues": queues, "params": t.params,
                "throttled": sum(a["throttled"] for a in proxy_stats["actions"].values()),
                "actions": proxy_stats["actions"]}
    finally:
        for m in mappings:
            m.stopping.set()
        for p in pools.values():
            p.stop()
        emulator.stop(proxy)
        emu.stop()


def dead_letters(sqs, url: str) -> int:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a.get("ApproximateNumberOfMessages", 0)) + int(a.get("ApproximateNumberOfMessagesNotVisible", 0))


def wait_idle(sqs, queues: dict, mappings: list, pools: dict, limit: float) -> bool:
    """Until every queue with a mapping is empty (visible, in flight, delayed) and no
    invocation runs, twice in a row; False after `limit` seconds."""
    end = time.time() + limit
    calm = 0
    watched = {m.q["url"] for m in mappings}
    while time.time() < end:
        busy = any(m.in_flight for m in mappings) or any(p.busy for p in pools.values())
        waiting = 0
        for url in watched:
            a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            waiting += sum(int(a.get(k, 0)) for k in (
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"))
        calm = calm + 1 if not busy and not waiting else 0
        if calm >= 2:
            return True
        time.sleep(0.5)
    return False


def read_reports(s3, bucket: str) -> tuple:
    """The failures the pairs' reports count, and the links per pair (continuations)."""
    failures, links = 0, {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="reports/")
    for page in pages:
        for o in page.get("Contents", []):
            r = json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
            rep = r.get("report") or {}
            failures += (rep.get("totals") or {}).get("failures", 0) + (1 if r.get("error") else 0)
            pair = f"{r.get('account')}/{r.get('region')}"
            links[pair] = links.get(pair, 0) + 1
    return failures, links


# ---------------------------------------------------------------- the CLI beside it

def cli(args, ids: list, n: int) -> dict:
    """`make bench-org`'s CLI run (ami-sweeper at its defaults) of the same estate, on a
    fresh emulator from the same seed behind the same front door, with the same checks."""
    tmp = tempfile.mkdtemp(prefix="ami-sweeper-bench-fanout-cli-")
    seed_path = os.path.join(tmp, "amis.json")
    with open(seed_path, "w") as f:
        json.dump(estate(ids, n), f)
    org_args = SimpleNamespace(sweeper=args.sweeper, moto_python=args.moto_python,
                               c7n_org="-", tools="untold", shape=args.shape,
                               latency=args.latency)
    cmd = bench_org.commands(org_args, tmp, ids)["untold"]
    seen = {}
    r = bench_org.one_run(org_args, "untold", cmd, seed_path, ids,
                          inspect=lambda url_of, when: seen.__setitem__(when, inventory(url_of, ids)))
    problems = check(seen["before"], seen["after"], bench_org.REGIONS)
    if r["code"] != 0:
        problems.append(f"exit {r['code']}: {r['output'].strip().splitlines()[-1:]}")
    if r["failures"]:
        problems.append(f"{r['failures']} failures in the report")
    return {"wall": r["wall"], "problems": problems, "throttled": r["throttled"],
            "actions": r["actions"]}


# ---------------------------------------------------------------- rows

def pair_ends(result: dict) -> dict:
    """Per pair: first DeregisterImage, last DeregisterImage, last DeleteSnapshot (s from
    the schedule event)."""
    out = {}
    for pair, b in result["pairs"].items():
        if "deregister_image" in b:
            d, s = b["deregister_image"], b.get("delete_snapshot", (float("nan"),) * 2 + (0,))
            out[pair] = (d[0], d[1], s[0], s[1])
    return out


def throttled_text(actions: dict) -> str:
    return ", ".join(f"{a} {v['throttled']}" for a, v in sorted(actions.items()) if v["throttled"])


def accepted_text(actions: dict, pairs: int) -> str:
    """Calls the buckets let through, a pair on average, by action (what the floor's
    buckets do not count: the Describe bucket is shared by every read), with the emulator's
    mean time to answer one (the front door's round trip not included)."""
    return ", ".join(f"{a} {v['accepted'] / pairs:.1f} ({1000 * v['upstream_s'] / v['accepted']:.0f} ms)"
                     for a, v in sorted(actions.items()) if v["accepted"])


def verdict(problems: list) -> str:
    return "ok" if not problems else "FAIL: " + "; ".join(problems)


def row_a(args) -> tuple:
    ids = bench_org.accounts(args.accounts)
    pairs = len(ids) * len(bench_org.REGIONS)
    fl, formula = floor(args.images, args.shape, args.latency)
    d = deployed(args, ids, bench_org.REGIONS, args.images, {}, "a")
    c = cli(args, ids, args.images) if not args.no_cli else {
        "wall": float("nan"), "problems": ["the CLI was not run (--no-cli)"], "actions": {}}
    ends = pair_ends(d)
    slowest = max(e[3] for e in ends.values()) if ends else float("nan")
    print(f"   floor of the slowest pair (every pair has {args.images}): {formula}")
    print(f"   the schedule invocation (dispatch of {pairs} pairs) took {d['dispatched']:.2f} s; "
          f"{d['stats']['invocations']} invocations, {d['stats']['cold_starts']} copies started, "
          f"{d['throttled']} calls throttled; queues empty and copies idle at {d['idle']:.1f} s")
    print("   throttled calls by action, deployed: " + throttled_text(d["actions"])
          + "; CLI: " + throttled_text(c["actions"]))
    print("   calls answered a pair, by action, deployed: " + accepted_text(d["actions"], pairs)
          + "; CLI: " + accepted_text(c["actions"], pairs))
    print("   per pair (s from the schedule event): deregistrations first-last, deletions "
          "first-last")
    for p, (f0, f1, s0, s1) in sorted(ends.items()):
        print(f"     {p:<26} {f0:6.1f}-{f1:6.1f} {s0:6.1f}-{s1:6.1f}")
    rows = [("(a) deployed", d["wall"], fl, d["problems"]),
            ("(a) CLI, defaults", c["wall"], fl, c["problems"])]
    return rows, {"floor": fl, "slowest": slowest, "pairs": pairs, "dispatch": d["dispatched"],
                  "ends": ends, "deployed": d}


def row_b(args) -> list:
    ids = bench_org.accounts(1)
    fn = "PairSweeperFunction"
    fl, formula = floor(args.backlog_images, args.shape, args.latency)
    d = deployed(args, ids, bench_org.REGIONS[:1], args.backlog_images,
                 {fn: args.backlog_timeout}, "b")
    links = sum(d["links"].values())
    print(f"   floor: {formula}; the pair ran in {links} links (reports)")
    if links < 3:
        d["problems"].append(f"{links} links: the backlog was not three invocations' worth")
    return [(f"(b) backlog, {fn} Timeout {args.backlog_timeout} s", d["wall"], fl, d["problems"])]


# Lambda's SQS event source mapping (standard queue, default scaling): five batches at
# once when messages arrive, then up to 300 more concurrent invocations a minute.
ESM_START, ESM_PER_SECOND = 5, 300 / 60


def ramp(pairs: int, conc: int) -> float:
    """Seconds until Lambda runs min(pairs, conc) pair sweepers at once."""
    return max(0, min(pairs, conc) - ESM_START) / ESM_PER_SECOND


def model(args, a: dict) -> None:
    """(c) on paper: Lambda's scaling ramp to PairConcurrency, then waves of that many
    pairs, each at (a)'s per-pair overhead plus its own floor; links of the pair sweeper's
    Timeout less its stop margin."""
    d = a["deployed"]
    conc = int(d["params"]["PairConcurrency"])
    timeout = d["functions"]["PairSweeperFunction"]["template_timeout"]
    over = a["slowest"] - a["floor"]
    per_dispatch = a["dispatch"] / a["pairs"]
    print("\n-- row (c), on paper: a pair costs (a)'s overhead over its floor, "
          f"o = {a['slowest']:.1f} - {a['floor']:.1f} = {over:.1f} s (cold start, inventory, "
          "plan, the last deletion's wait); the dispatch "
          f"{a['dispatch']:.2f} s / {a['pairs']} pairs = {per_dispatch:.3f} s a pair; "
          f"PairConcurrency {conc} pairs at once (template default), reached after Lambda's "
          f"ramp r = (min(pairs, {conc}) - {ESM_START}) / {ESM_PER_SECOND:g} s (the SQS event "
          f"source starts {ESM_START} batches at once and adds up to 300 a minute)")
    for shape, label in ((1.0, "EC2's full buckets"), (args.shape, "the benchmark's buckets")):
        per_link = round(BUCKETS["deregister_image"][0] * shape) + \
            BUCKETS["deregister_image"][1] * shape * (timeout - 30)
        for pairs, n, what in ((400, 60, "nightly, 100 accounts x 4 Regions x 60 images"),
                               (400, 1000, "first deployment, 400 pairs x 1,000 images")):
            fl, _ = floor(n, shape, args.latency)
            waves = -(-pairs // conc)
            links = max(1, -(-n // int(per_link)))
            r = ramp(pairs, conc)
            total = pairs * per_dispatch + r + waves * (over * links + fl)
            print(f"   {what}, {label} (x{shape:g}): floor {fl:.1f} s a pair; "
                  f"{waves} wave(s) = ceil({pairs} / {conc}); {links} link(s) a pair "
                  f"(~{per_link:.0f} deregistrations a {timeout} s link); "
                  f"{pairs} x {per_dispatch:.3f} + {r:.0f} + {waves} x ({over:.1f} x {links} + "
                  f"{fl:.1f}) = {total:.0f} s ({total / 60:.1f} min)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweeper")
    ap.add_argument("moto_python")
    ap.add_argument("--template", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "template.yaml"))
    ap.add_argument("--accounts", type=int, default=10)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--shape", type=float, default=0.2)
    ap.add_argument("--latency", type=float, default=60.0)
    ap.add_argument("--rows", default="a,b")
    ap.add_argument("--backlog-timeout", type=int, default=60,
                    help="the pair sweeper's Timeout for row (b), seconds")
    ap.add_argument("--backlog-images", type=int, default=0,
                    help="row (b)'s backlog (default: three invocations' worth)")
    ap.add_argument("--poll", type=float, default=0.1, help="seconds between empty receives")
    ap.add_argument("--row-timeout", type=float, default=1800)
    ap.add_argument("--no-cli", action="store_true",
                    help="row (a) without the CLI's run (to try a change; not for the table)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a template parameter (ForceDryRun is false unless given)")
    args = ap.parse_args()
    args.params = dict({"ForceDryRun": "false"}, **dict(p.split("=", 1) for p in args.param))
    if not args.backlog_images:
        # Three links' worth: the first link's burst, then the refill over each link's
        # working time (its Timeout less a tenth, the stop margin).
        size, rate = (v * args.shape for v in BUCKETS["deregister_image"])
        args.backlog_images = int(round(size + 3 * rate * args.backlog_timeout * 0.9))
    print(f"== fan-out: the deployed path (template.yaml's functions and event source mappings) "
          f"on the emulator; buckets x{args.shape:g} of EC2's per (account, Region), "
          f"{args.latency:g} ms per EC2 call; binary {args.sweeper}")
    rows, a = [], None
    if "a" in args.rows:
        r, a = row_a(args)
        rows += r
    if "b" in args.rows:
        rows += row_b(args)
    print(f"\n{'row':<46} {'wall s':>7} {'floor s':>8} {'vs floor':>9}  checks")
    for name, wall, fl, problems in rows:
        print(f"{name:<46} {wall:>7.1f} {fl:>8.1f} {wall / fl:>8.2f}x  {verdict(problems)}")
    if a:
        model(args, a)
    return 1 if any(p for *_, p in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
