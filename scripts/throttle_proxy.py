#!/usr/bin/env python3
"""A loopback proxy in front of the EC2 emulator that throttles like EC2 does and injects faults.

usage: throttle_proxy.py UPSTREAM [--port P] [--scale K] [--shape F] [--latency MS]
                         [--bucket NAME=SIZE/RATE ...] [--no-throttle]
                         [--route ACCOUNT=URL ...]

moto never throttles. This proxy applies EC2's documented token buckets, one set per
(account, Region) as EC2 keeps them, to every EC2 request before passing it on, and
answers `503 RequestLimitExceeded` in EC2's XML error shape when the action's bucket is
empty. A throttled request takes no token, as in EC2. CloudFormation and EMR requests
draw on their own buckets per (account, Region) (`SERVICE_BUCKETS`) and are refused with
each service's own throttling answer (`Throttling`, `ThrottlingException`); S3 is never
throttled by the table, but a fault with code `SlowDown` answers as S3 does. The table is EC2's "Request
throttling for the Amazon EC2 API" page's, the same as `src/app/ratelimit.rs` (a test
checks the two agree):

    bucket              actions                              size  refill/s
    describe            Describe*, Get*, List*, Search*      100   20
    deregister_image    DeregisterImage                      100   5
    delete_snapshot     DeleteSnapshot                       100   5
    tags                CreateTags, DeleteTags               100   10
    mutating            every other EC2 action                50   5

The Region is the request's signing scope's; the account is the one whose role was
assumed (through this proxy) for the request's access key, else `default`.
`--route ACCOUNT=URL` sends that account's requests (and the `AssumeRole` of its roles,
so the credentials are the same emulator's) to another emulator than UPSTREAM: each
member account answered by its own process, as AWS serves accounts independently
(`scripts/bench_org.py`'s organization, where one Python process would answer for all).

`--scale K` multiplies every refill rate by K (sizes stay), so a benchmark finishes K
times sooner; a client must then be told K times its own rates too. `--shape F`
multiplies every size and refill by F (0.2: the buckets other callers leave when they
hold four fifths of each). `--bucket` replaces one bucket's size and refill (before
scaling), for tests. `--latency MS` holds every EC2
call that long before answering, to model a remote endpoint's round trip (the emulator
on loopback answers in milliseconds; the value is an assumption, not a measurement of
AWS). Requests to other
services (Auto Scaling, S3, SQS, STS: told apart by the signing scope in the
Authorization header) pass through untouched.

Faults (for tests): `POST /__faults__` with a JSON list replaces the active faults; each
is `{"action": "DeleteSnapshot", "id": "snap-1" (optional: the request must mention it),
"status": 403, "code": "UnauthorizedOperation", "message": "...", "times": N (optional),
"delay_ms": D (optional: hold, then pass on), "kill": true (optional: close the
connection with no answer)}`. An action is EC2's `Action` parameter or the JSON
protocol's `X-Amz-Target` operation (SQS), so any service can be failed; leave `action`
out and give `id` to match S3 requests by path (`"?delete"` is DeleteObjects). Errors come
in EC2's XML shape, S3's for S3, or SQS's JSON shape for JSON-protocol requests.

moto does not implement `ListImagesInRecycleBin`; the proxy answers it as EC2 would,
with the images named in `POST /__recycle_bin__` (a JSON list of AMI ids; none at first)
that the request asks about. Nor `DescribeImageReferences`: the proxy answers it in EC2's
shape with the references set by `POST /__image_references__` (`{"ami-1": [{"type":
"ec2:Instance", "arn": "arn:..."}]}`; none at first), and Image Builder's
`ListImageRecipes` with the summaries set by `POST /__image_recipes__` (a JSON list of
`{"arn", "name", "parentImage"}`; none at first), and the Recycle Bin's `ListRules` and
`GetRule` with the rules set by `POST /__recycle_bin_rules__` (a JSON list of `aws rbin
get-rule` outputs; none at first). `DisableImage`, `EnableImage` and
`EnableImageDeprecation` are answered too (moto lacks them), and an image disabled through
the proxy is shown `disabled` in `DescribeImages`; so are the image usage reports
(`CreateImageUsageReport` and the rest), with the usage set by `POST /__image_usage__`. Faults apply to these answers too, so
`{"action": "DescribeImageReferences", "code": "InvalidAction"}` models a region without
the API. `--no-throttle` passes every request on unthrottled: the emulator's front door.

`GET /__throttle__` returns per-action counts (`accepted`, `throttled`) and, per bucket,
the first and last accepted request times; `POST /__throttle__/reset` clears them. The
proxy prints `listening on http://127.0.0.1:P` on stdout once it accepts connections.
"""
import argparse
import contextlib
import functools
import http.client
import http.server
import json
import os
import re
import threading
import time
import urllib.parse
import uuid

BUCKETS = {
    "describe": (100, 20.0),
    "deregister_image": (100, 5.0),
    "delete_snapshot": (100, 5.0),
    "tags": (100, 10.0),
    "mutating": (50, 5.0),
}

# Other services' reads, by signing-scope service: the bucket `src/app/ratelimit.rs` starts
# each one's pacer at (a test checks the two agree), and the throttling answer each service
# gives (status, code; in the service's own error shape).
SERVICE_BUCKETS = {
    "cloudformation": (10, 2.0),
    "elasticmapreduce": (10, 2.0),
}
THROTTLE_ANSWERS = {
    "ec2": (503, "RequestLimitExceeded"),
    "cloudformation": (400, "Throttling"),
    "elasticmapreduce": (400, "ThrottlingException"),
    "s3": (503, "SlowDown"),
}


def bucket_of(action: str) -> str:
    """The EC2 token bucket an action draws from."""
    if action == "DeregisterImage":
        return "deregister_image"
    if action == "DeleteSnapshot":
        return "delete_snapshot"
    if action in ("CreateTags", "DeleteTags"):
        return "tags"
    if action.startswith(("Describe", "Get", "List", "Search")):
        return "describe"
    return "mutating"


class TokenBucket:
    """A bucket of `size` tokens refilled at `rate` per second; starts full."""

    def __init__(self, size: int, rate: float):
        self.size, self.rate = size, rate
        self.tokens, self.last = float(size), time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.size, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class PairBuckets:
    """Each (account, Region) pair's own set of buckets, made full on first use."""

    def __init__(self, shapes: dict):
        self.shapes = shapes
        self.pairs = {}
        self.keys = {}
        self.lock = threading.Lock()

    def learn(self, access_key: str, account: str):
        """An AssumeRole answer: `access_key` acts as `account`."""
        with self.lock:
            self.keys[access_key] = account

    def get(self, access_key: str, region: str, name: str) -> "TokenBucket":
        with self.lock:
            pair = (self.keys.get(access_key, "default"), region)
            if pair not in self.pairs:
                shapes = {**self.shapes, **SERVICE_BUCKETS}
                self.pairs[pair] = {n: TokenBucket(size, rate) for n, (size, rate) in shapes.items()}
            return self.pairs[pair][name]

    def account(self, access_key: str) -> "str | None":
        """The account `access_key` acts as (None: not an assumed role's)."""
        with self.lock:
            return self.keys.get(access_key)

    def pair(self, access_key: str, region: str) -> str:
        with self.lock:
            return f"{self.keys.get(access_key, 'default')}/{region}"


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.actions = {}
        self.windows = {}
        self.pairs = {}
        self.pair_windows = {}

    def record(self, action: str, bucket: str, accepted: bool, pair: str = "default"):
        now = time.time()
        with self.lock:
            a = self.actions.setdefault(action, {"accepted": 0, "throttled": 0, "upstream_s": 0.0})
            a["accepted" if accepted else "throttled"] += 1
            p = self.pairs.setdefault(pair, {"accepted": 0, "throttled": 0})
            p["accepted" if accepted else "throttled"] += 1
            if accepted:
                w = self.windows.setdefault(bucket, [now, now])
                w[1] = now
                pw = self.pair_windows.setdefault(pair, {}).setdefault(bucket, [now, now, 0])
                pw[1], pw[2] = now, pw[2] + 1

    def add_upstream(self, action: str, seconds: float):
        """Time the upstream (the emulator) took to answer one call of `action`."""
        with self.lock:
            a = self.actions.setdefault(action, {"accepted": 0, "throttled": 0, "upstream_s": 0.0})
            a["upstream_s"] += seconds

    def snapshot(self) -> dict:
        with self.lock:
            return {"actions": json.loads(json.dumps(self.actions)),
                    "pairs": json.loads(json.dumps(self.pairs)),
                    "buckets": {b: {"first": w[0], "last": w[1]} for b, w in self.windows.items()},
                    # Per pair and bucket: first and last accepted call, and how many.
                    "pair_buckets": {p: {b: {"first": w[0], "last": w[1], "accepted": w[2]}
                                         for b, w in ws.items()}
                                     for p, ws in self.pair_windows.items()}}


TRACE = os.environ.get("PROXY_TRACE")
# At most this many requests at once in each emulator (`--upstream-concurrency`; the
# modelled round trip is held outside it). moto is one Python process: sixty requests let in
# at once take it twice as long as the same requests a few at a time, which no AWS endpoint
# does. 0: no limit.
UPSTREAM_SLOTS = 0


@functools.lru_cache(maxsize=None)
def upstream_slots(netloc: str):
    """The requests one emulator (by `host:port`) may have at once."""
    if UPSTREAM_SLOTS <= 0:
        return contextlib.nullcontext()
    return threading.BoundedSemaphore(UPSTREAM_SLOTS)


SCOPE = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/")
ASSUMED_KEY = re.compile(r"<AccessKeyId>([^<]+)</AccessKeyId>")
ROLE_ACCOUNT = re.compile(r"arn:[^:]+:iam::(\d{12}):role/")


class Scope:
    """A request's signing scope: access key, Region and service (empty when unsigned)."""

    def __init__(self, header: str):
        m = SCOPE.search(header)
        self.key, self.region, self.service = m.groups() if m else ("", "", "")

    def group(self, _n: int) -> str:
        return self.service

    def __bool__(self) -> bool:
        return bool(self.service)
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class Faults:
    """The active faults and the emulated Recycle Bin, changed at run time by tests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.faults = []
        self.recycle_bin = []
        self.references = {}
        self.recipes = []
        self.bin_rules = []
        self.disabled = set()
        self.image_usage = {}

    def set(self, faults: list):
        with self.lock:
            self.faults = [dict(f) for f in faults]

    def set_bin(self, ids: list):
        with self.lock:
            self.recycle_bin = list(ids)

    def match(self, action: str, body: str):
        """The first fault for this request, counting down its `times`."""
        with self.lock:
            for f in self.faults:
                if f.get("action") not in (None, action):
                    continue
                if f.get("id") and f["id"] not in body:
                    continue
                if f.get("times") is not None:
                    if f["times"] <= 0:
                        continue
                    f["times"] -= 1
                return dict(f)
        return None


def bin_answer(ids_in_bin: list, params: dict) -> bytes:
    """`ListImagesInRecycleBin` in EC2's XML shape: the asked-for images that are in the bin."""
    asked = [v[0] for k, v in params.items() if k.startswith("ImageId.")]
    found = [i for i in ids_in_bin if not asked or i in asked]
    items = "".join(f"<item><imageId>{i}</imageId><name>{i}</name>"
                    "<recycleBinEnterTime>2026-11-20T00:00:00.000Z</recycleBinEnterTime>"
                    "<recycleBinExitTime>2026-12-20T00:00:00.000Z</recycleBinExitTime></item>"
                    for i in found)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<ListImagesInRecycleBinResponse '
            'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><imageSet>{items}</imageSet>"
            "</ListImagesInRecycleBinResponse>").encode()


RETIREMENT = ("DisableImage", "EnableImage", "EnableImageDeprecation", "DisableImageDeprecation")
USAGE_REPORTS = ("CreateImageUsageReport", "DescribeImageUsageReports",
                 "DescribeImageUsageReportEntries")


def usage_report_answer(action: str, params: dict, usage: dict) -> bytes:
    """AWS's image usage reports in EC2's XML shape: a report per image (its id names the
    image), available at once, its entries from `POST /__image_usage__`
    (`{"ami-1": {"111122223333": 2}}`)."""
    ns = 'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'
    head = f"<requestId>{uuid.uuid4()}</requestId>"
    if action == "CreateImageUsageReport":
        image = params["ImageId"][0]
        body = f"{head}<reportId>amiur-{image}</reportId>"
    else:
        ids = [v[0] for k, v in sorted(params.items()) if k.startswith("ReportId.")]
        images = [i[len("amiur-"):] for i in ids]
        if action == "DescribeImageUsageReports":
            items = "".join(f"<item><reportId>amiur-{i}</reportId><imageId>{i}</imageId>"
                            "<state>available</state></item>" for i in images)
            body = f"{head}<imageUsageReportSet>{items}</imageUsageReportSet>"
        else:
            items = "".join(f"<item><resourceType>ec2:Instance</resourceType><reportId>amiur-{i}"
                            f"</reportId><usageCount>{n}</usageCount><accountId>{a}</accountId>"
                            f"<imageId>{i}</imageId></item>"
                            for i in images for a, n in usage.get(i, {}).items())
            body = f"{head}<imageUsageReportEntrySet>{items}</imageUsageReportEntrySet>"
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response {ns}>{body}'
            f"</{action}Response>").encode()


def retirement_answer(action: str) -> bytes:
    """`DisableImage`, `EnableImage`, `EnableImageDeprecation`, `DisableImageDeprecation` in
    EC2's XML shape."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response '
            'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><return>true</return></{action}Response>").encode()


def show_disabled(data: bytes, disabled: set) -> bytes:
    """moto lacks DisableImage: in its DescribeImages answer, the images the proxy was asked
    to disable are shown `disabled` (as EC2 shows them with IncludeDisabled)."""
    text = data.decode()
    for image in disabled:
        text = re.sub(
            rf"(<imageId>{re.escape(image)}</imageId>(?:(?!<imageId>).)*?<imageState>)available(</imageState>)",
            r"\1disabled\2", text, flags=re.S)
    return text.encode()


SNAPSHOT_FILTER = "block-device-mapping.snapshot-id"


def snapshot_filter(params: dict) -> tuple:
    """moto lacks DescribeImages' `block-device-mapping.snapshot-id` filter: the snapshot ids
    it asks for, and the request's parameters without it (None when it is not there)."""
    names = {k.split(".")[1] for k, v in params.items()
             if re.fullmatch(r"Filter\.\d+\.Name", k) and v[0] == SNAPSHOT_FILTER}
    if not names:
        return None, None
    n = names.pop()
    wanted = {v[0] for k, v in params.items() if k.startswith(f"Filter.{n}.Value.")}
    rest = {k: v for k, v in params.items() if not k.startswith(f"Filter.{n}.")}
    return wanted, urllib.parse.urlencode(rest, doseq=True).encode()


def keep_images_using(data: bytes, snapshots: set) -> bytes:
    """In a DescribeImages answer, only the images whose block device mappings name one of
    `snapshots` (the top-level items of `imagesSet`)."""
    text = data.decode()
    start, end = text.find("<imagesSet>"), text.find("</imagesSet>")
    if start < 0 or end < 0:
        return data
    body, kept, depth, begin = text[start + len("<imagesSet>"):end], [], 0, 0
    for m in re.finditer(r"<item>|</item>|<item/>", body):
        if m.group() == "<item>":
            if depth == 0:
                begin = m.start()
            depth += 1
        elif m.group() == "</item>":
            depth -= 1
            if depth == 0:
                item = body[begin:m.end()]
                ids = set(re.findall(r"<snapshotId>([^<]*)</snapshotId>", item))
                if ids & snapshots:
                    kept.append(item)
    return (text[:start] + "<imagesSet>" + "".join(kept) + text[end:]).encode()


def references_answer(refs: dict, params: dict) -> bytes:
    """`DescribeImageReferences` in EC2's XML shape: the references of the asked-for images."""
    asked = [v[0] for k, v in sorted(params.items()) if k.startswith("ImageId.")]
    items = "".join(f"<item><imageId>{i}</imageId><resourceType>{r['type']}</resourceType>"
                    f"<arn>{r['arn']}</arn></item>"
                    for i in asked for r in refs.get(i, []))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<DescribeImageReferencesResponse '
            'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><imageReferenceSet>{items}"
            "</imageReferenceSet></DescribeImageReferencesResponse>").encode()


def rbin_answer(rules: list, path: str, body: str) -> tuple:
    """Recycle Bin's `ListRules` (`POST /list-rules`) and `GetRule` (`GET /rules/ID`) in
    its JSON shapes, from the rules set by `POST /__recycle_bin_rules__` (each as
    `aws rbin get-rule` prints it)."""
    json_type = [("Content-Type", "application/json")]
    if path.startswith("/list-rules"):
        kind = json.loads(body or "{}").get("ResourceType")
        summaries = [{k: r[k] for k in ("Identifier", "RetentionPeriod", "LockState") if k in r}
                     for r in rules if r.get("ResourceType") == kind]
        return 200, json.dumps({"Rules": summaries}).encode(), json_type
    if path.startswith("/rules/"):
        wanted = urllib.parse.unquote(path[len("/rules/"):].split("?")[0])
        for r in rules:
            if r.get("Identifier") == wanted:
                return 200, json.dumps(r).encode(), json_type
        return 404, json.dumps({"Message": f"rule {wanted} not found"}).encode(), \
            json_type + [("x-amzn-ErrorType", "ResourceNotFoundException")]
    return 400, json.dumps({"Message": f"not emulated: {path}"}).encode(), \
        json_type + [("x-amzn-ErrorType", "ValidationException")]


def make_handler(upstream: str, buckets: PairBuckets, stats: Stats, latency: float = 0.0,
                 faults: "Faults | None" = None, throttle: bool = True,
                 routes: "dict | None" = None):
    target = urllib.parse.urlsplit(upstream).netloc
    routes = {a: urllib.parse.urlsplit(u).netloc for a, u in (routes or {}).items()}
    local = threading.local()
    faults = faults or Faults()

    def connection(netloc: str) -> http.client.HTTPConnection:
        conns = local.__dict__.setdefault("conns", {})
        if conns.get(netloc) is None:
            conns[netloc] = http.client.HTTPConnection(netloc, timeout=120)
        return conns[netloc]

    def route(scope: "Scope", action: str, params: dict) -> str:
        """The emulator answering for the request's account (UPSTREAM's by default)."""
        if not routes or not scope:
            return target
        if scope.group(1) == "sts" and action == "AssumeRole":
            role = ROLE_ACCOUNT.search(urllib.parse.unquote((params.get("RoleArn") or [""])[0]))
            return routes.get(role.group(1) if role else None, target)
        return routes.get(buckets.account(scope.key), target)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # An answer goes out as two writes (headers, then body). With Nagle's algorithm
        # the body waits for the client's ACK of the headers, which a client holds back
        # for up to 40 ms (delayed ACK) on a kept-alive connection: every call would be
        # 40 ms slower than the round trip the front door models.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def reply(self, status: int, body: bytes, headers=()):
            self.status = status
            try:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # The client went away (a test killed it mid-call): nothing to answer.
                self.close_connection = True

        def control(self, body: bytes) -> bool:
            if self.path.startswith("/__faults__"):
                faults.set(json.loads(body or b"[]"))
                self.reply(200, b"{}", [("Content-Type", "application/json")])
                return True
            if self.path.startswith("/__recycle_bin__"):
                faults.set_bin(json.loads(body or b"[]"))
                self.reply(200, b"{}", [("Content-Type", "application/json")])
                return True
            if self.path.startswith("/__image_references__"):
                faults.references = json.loads(body or b"{}")
                self.reply(200, b"{}", [("Content-Type", "application/json")])
                return True
            if self.path.startswith("/__image_usage__"):
                faults.image_usage = json.loads(body or b"{}")
                self.reply(200, b"{}", [("Content-Type", "application/json")])
                return True
            if self.path.startswith("/__recycle_bin_rules__"):
                faults.bin_rules = json.loads(body or b"[]")
                self.reply(200, b"{}", [("Content-Type", "application/json")])
                return True
            if self.path.startswith("/__image_recipes__"):
                faults.recipes = json.loads(body or b"[]")
                self.reply(200, b"{}", [("Content-Type", "application/json")])
                return True
            if not self.path.startswith("/__throttle__"):
                return False
            if self.command == "POST" and self.path.endswith("/reset"):
                stats.reset()
            self.reply(200, json.dumps(stats.snapshot()).encode(),
                       [("Content-Type", "application/json")])
            return True

        def forward(self, body: bytes, rewrite=None, learn=None):
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in HOP and k.lower() != "content-length"}
            netloc = getattr(self, "upstream", target)
            for attempt in (1, 2):
                conn = connection(netloc)
                try:
                    with upstream_slots(netloc):
                        conn.request(self.command, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                    break
                except (http.client.HTTPException, OSError):
                    conn.close()
                    local.conns[netloc] = None
                    if attempt == 2:
                        self.reply(502, b"upstream failed")
                        return
            out = [(k, v) for k, v in resp.getheaders()
                   if k.lower() not in HOP and k.lower() != "content-length"]
            if rewrite and resp.status == 200:
                data = rewrite(data)
            if learn and resp.status == 200:
                learn(data)
            self.reply(resp.status, data, out)

        def handle_any(self):
            arrived = time.time()
            try:
                self.handle_request()
            finally:
                if TRACE:
                    # PROXY_TRACE=FILE: one line per request (arrived, answered, pair,
                    # service, action, status), to see where a run's time goes.
                    scope, action = getattr(self, "traced", (None, "?"))
                    pair = buckets.pair(scope.key, scope.region) if scope else "-"
                    with open(TRACE, "a") as f:
                        f.write(f"{arrived:.3f} {time.time():.3f} {pair} "
                                f"{scope.group(1) if scope else '-'} {action} "
                                f"{getattr(self, 'status', '-')}\n")

        def handle_request(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.control(body):
                return
            scope = Scope(self.headers.get("Authorization", ""))
            text = body.decode(errors="replace")
            query = urllib.parse.urlsplit(self.path).query
            params = urllib.parse.parse_qs(text or query)
            target_header = self.headers.get("X-Amz-Target", "")
            action = (params.get("Action") or [target_header.rpartition(".")[2] or "?"])[0]
            self.traced = (scope, action)
            self.upstream = route(scope, action, params)
            fault = faults.match(action, text + self.path)
            if fault:
                if fault.get("delay_ms"):
                    time.sleep(fault["delay_ms"] / 1000)
                if fault.get("kill"):
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault.get("code"):
                    service = scope.group(1) if scope else ""
                    self.fail(fault, json_protocol=bool(target_header), service=service)
                    return
            if scope and scope.group(1) == "ec2" and action == "ListImagesInRecycleBin":
                self.reply(200, bin_answer(faults.recycle_bin, params),
                           [("Content-Type", "text/xml;charset=UTF-8")])
                return
            if scope and scope.group(1) == "rbin":
                self.reply(*rbin_answer(faults.bin_rules, self.path, text))
                return
            if scope and scope.group(1) == "imagebuilder" and "ListImageRecipes" in self.path:
                body = json.dumps({"imageRecipeSummaryList": faults.recipes}).encode()
                self.reply(200, body, [("Content-Type", "application/json")])
                return
            if scope and scope.group(1) == "ec2" and not throttle:
                stats.record(action, "none", True)
            elif scope and scope.group(1) == "ec2":
                name = bucket_of(action)
                accepted = buckets.get(scope.key, scope.region, name).take()
                stats.record(action, name, accepted, buckets.pair(scope.key, scope.region))
                if latency:
                    time.sleep(latency)
                if not accepted:
                    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                           "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
                           f"</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID>"
                           "</Response>")
                    self.reply(503, xml.encode(), [("Content-Type", "text/xml;charset=UTF-8")])
                    return
            service = scope.group(1) if scope else ""
            if throttle and service in SERVICE_BUCKETS:
                accepted = buckets.get(scope.key, scope.region, service).take()
                stats.record(action, service, accepted, buckets.pair(scope.key, scope.region))
                if not accepted:
                    status, code = THROTTLE_ANSWERS[service]
                    self.fail({"status": status, "code": code, "message": "Rate exceeded"},
                              json_protocol=bool(target_header), service=service)
                    return
            if scope and scope.group(1) == "ec2" and action in USAGE_REPORTS:
                self.reply(200, usage_report_answer(action, params, faults.image_usage),
                           [("Content-Type", "text/xml;charset=UTF-8")])
                return
            if scope and scope.group(1) == "ec2" and action in RETIREMENT:
                image = (params.get("ImageId") or [""])[0]
                if action == "DisableImage":
                    faults.disabled.add(image)
                elif action == "EnableImage":
                    faults.disabled.discard(image)
                self.reply(200, retirement_answer(action), [("Content-Type", "text/xml;charset=UTF-8")])
                return
            wanted, narrowed = (snapshot_filter(params) if scope and scope.group(1) == "ec2"
                                and action == "DescribeImages" else (None, None))
            if wanted is not None:
                disabled = set(faults.disabled)
                self.forward(narrowed, rewrite=lambda data: keep_images_using(
                    show_disabled(data, disabled), wanted))
                return
            if scope and scope.group(1) == "ec2" and action == "DescribeImages" and faults.disabled:
                self.forward(body, rewrite=lambda data: show_disabled(data, faults.disabled))
                return
            if scope and scope.group(1) == "ec2" and action == "DescribeImageReferences":
                # Answered here (moto lacks it), after the Describe bucket has had its say.
                self.reply(200, references_answer(faults.references, params),
                           [("Content-Type", "text/xml;charset=UTF-8")])
                return
            if scope and scope.group(1) == "sts" and action == "AssumeRole":
                role = ROLE_ACCOUNT.search(urllib.parse.unquote((params.get("RoleArn") or [""])[0]))

                def learn(data: bytes, account=role.group(1) if role else None):
                    key = ASSUMED_KEY.search(data.decode(errors="replace"))
                    if account and key:
                        buckets.learn(key.group(1), account)
                self.forward(body, learn=learn)
                return
            started = time.perf_counter()
            self.forward(body)
            if scope and scope.group(1) == "ec2":
                stats.add_upstream(action, time.perf_counter() - started)

        def fail(self, fault: dict, json_protocol: bool, service: str = ""):
            """A fault in the service's own error shape: S3's XML, the JSON protocols'
            (SQS, EMR), the Query protocol's `ErrorResponse` (CloudFormation), or EC2's."""
            status, code = int(fault.get("status", 400)), fault["code"]
            message = fault.get("message", "injected fault")
            if service == "cloudformation":
                xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Type>Sender</Type>'
                       f"<Code>{code}</Code><Message>{message}</Message></Error>"
                       f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
                self.reply(status, xml.encode(), [("Content-Type", "text/xml")])
                return
            if service == "s3":
                xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                       f"<Error><Code>{code}</Code><Message>{message}</Message>"
                       f"<RequestId>{uuid.uuid4()}</RequestId></Error>")
                self.reply(status, xml.encode(), [("Content-Type", "application/xml")])
                return
            if json_protocol:
                body = json.dumps({"__type": code, "message": message}).encode()
                self.reply(status, body, [("Content-Type", "application/x-amz-json-1.0"),
                                          ("x-amzn-query-error", f"{code};Sender")])
                return
            xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                   f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
                   f"<RequestID>{uuid.uuid4()}</RequestID></Response>")
            self.reply(status, xml.encode(), [("Content-Type", "text/xml;charset=UTF-8")])

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("upstream", help="the emulator, e.g. http://127.0.0.1:5000")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every refill rate")
    ap.add_argument("--shape", type=float, default=1.0,
                    help="multiplies every bucket's size and refill (0.2: a fifth of EC2's)")
    ap.add_argument("--latency", type=float, default=0.0, help="milliseconds per EC2 call")
    ap.add_argument("--bucket", action="append", default=[], metavar="NAME=SIZE/RATE",
                    help=f"override one of {', '.join(BUCKETS)}")
    ap.add_argument("--upstream-concurrency", type=int, default=0,
                    help="requests in the emulator at once (0: no limit)")
    ap.add_argument("--no-throttle", action="store_true",
                    help="pass every request on (stubs and faults still apply)")
    ap.add_argument("--route", action="append", default=[], metavar="ACCOUNT=URL",
                    help="that account's requests go to the emulator at URL")
    args = ap.parse_args()
    sizes = dict(BUCKETS)
    for spec in args.bucket:
        name, _, value = spec.partition("=")
        size, _, rate = value.partition("/")
        if name not in BUCKETS or not size.isdigit():
            ap.error(f"--bucket {spec}: expected NAME=SIZE/RATE with NAME one of {', '.join(BUCKETS)}")
        sizes[name] = (int(size), float(rate))
    shapes = {name: (max(1, round(size * args.shape)), rate * args.scale * args.shape)
              for name, (size, rate) in sizes.items()}
    buckets = PairBuckets(shapes)
    stats = Stats()
    # socketserver listens with a backlog of 5: a tool opening dozens of connections at
    # once (one per call in flight, several pairs) would wait a second for each refused
    # SYN to be sent again. The front door must not add that to anyone's time.
    http.server.ThreadingHTTPServer.request_queue_size = 1024
    global UPSTREAM_SLOTS
    UPSTREAM_SLOTS = args.upstream_concurrency
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port),
                                             make_handler(args.upstream, buckets, stats,
                                                          args.latency / 1000,
                                                          throttle=not args.no_throttle,
                                                          routes=dict(r.split("=", 1)
                                                                      for r in args.route)))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
