#!/usr/bin/env python3
"""Checks template.yaml for what cfn-lint and `sam validate` do not catch.

Reads the template with cfn-lint's own loader (it understands !Ref, !Sub, ...) and
asserts the deployment contract: runtime, architecture, handler, timeouts, sweep
concurrency, the SQS event source, the dead-letter queue and least-privilege IAM.
Prints one line per check; exits 1 on the first failure.
"""
import glob
import os
import re
import sys

from cfnlint.decode import cfn_yaml

# The adapter files whose read calls need IAM read actions of the same name.
READ_ADAPTERS = {"ec2": "ec2", "autoscaling": "autoscaling", "ssm": "ssm", "batch": "batch",
                 "imagebuilder": "imagebuilder", "rbin": "rbin", "organizations": "organizations",
                 "cloudformation": "cloudformation", "emr": "elasticmapreduce"}


def reads_in_code(root: str) -> set:
    """`service:Action` for every Describe/List/Get call the usage and inventory adapters
    record (`self.calls.record("...")`)."""
    found = set()
    for path in glob.glob(os.path.join(root, "src", "adapters", "aws", "*.rs")):
        service = READ_ADAPTERS.get(os.path.basename(path)[:-3])
        if service:
            for op in re.findall(r'record\("([A-Za-z0-9]+)"\)', open(path).read()):
                if op.startswith(("Describe", "List", "Get")):
                    found.add(f"{service}:{op}")
    return found


def member_checks(path: str, hub_actions: set) -> list:
    """The member account's role: assumable only by the hub stack's function roles within
    the organization, and carrying only actions the hub's functions have."""
    m = cfn_yaml.load(path)
    role = m["Resources"]["MemberRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    acts = {a for p in role["Policies"] for st in p["PolicyDocument"]["Statement"]
            for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    return [
        ("member role: trusted only by the hub's function roles, in the organization",
         len(trust) == 1 and trust[0]["Action"] == "sts:AssumeRole"
         and "PrincipalOrgID" in str(trust[0]["Condition"]["StringEquals"])
         and all("FunctionRole" in str(a) for a in trust[0]["Condition"]["ArnLike"]["aws:PrincipalArn"])),
        ("member role: no action the hub's functions do not have themselves",
         acts <= hub_actions | {"ssm:GetParameter"}),
        ("member role: no wildcard actions", not any(a.endswith("*") for a in acts)),
    ]


# The dashboard's widgets, as docs/operations.md lists them.
DASHBOARD_WIDGETS = [
    "Alarms",
    "Images deregistered and retiring",
    "Images kept, by reason",
    "Storage deleted and deferred",
    "GiB reclaimed and estimated saving (USD a month)",
    "Failures and throttles",
    "Dead-letter queues (messages)",
    "Function errors",
    "Per account: images deregistered",
    "Per account: failures",
    "Per account: estimated saving (USD a month)",
]

# The metrics the sweep report emits (src/app/report.rs, `metrics` and `emf_line_with`).
def emitted_metrics(root: str) -> set:
    text = open(os.path.join(root, "src", "app", "report.rs")).read()
    return set(re.findall(r'\("([A-Z][A-Za-z]+)", ', text)) | set(re.findall(r'"Name": "([A-Za-z]+)"', text)) \
        | set(re.findall(r'push\(\(\s*"([A-Z][A-Za-z]+)"', text))


def notification_checks(t: dict, root: str) -> list:
    """The optional topic: off by default, used by every alarm, published to by the sweep
    functions only; the dashboard's widgets and the metrics they graph."""
    import json
    r, params = t["Resources"], t["Parameters"]
    topic = {"Fn::If": ["HasNotificationTopicArn", {"Ref": "NotificationTopicArn"}, {"Ref": "NotificationTopic"}]}
    alarms = {k: v["Properties"] for k, v in r.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    body_sub = r["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    body = json.loads(re.sub(r"\$\{[^}]+\}", "X", body_sub))
    titles = [w["properties"]["title"] for w in body["widgets"]]
    graphed = set(re.findall(r'MetricName=\\?"?([A-Za-z_]+)', body_sub))
    publish = r["SweeperNotificationAccess"]["Properties"]
    watched = {str(a.get("Dimensions", "")) + str(a.get("Metrics", "")) for a in alarms.values()}
    return [
        ("notifications are off by default",
         params["NotificationEmail"]["Default"] == "" and params["NotificationTopicArn"]["Default"] == ""),
        ("every alarm notifies the topic when there is one",
         all(a.get("AlarmActions") == {"Fn::If": ["HasNotifications", [topic], {"Ref": "AWS::NoValue"}]}
             for a in alarms.values())),
        ("alarms on the pair function's errors, the worker's errors and the sweep queue's DLQ",
         any("PairSweeperFunction" in w for w in watched) and any("CleanupFunction" in w for w in watched)
         and any("SweepDeadLetterQueue" in w for w in watched) and any("CleanupDeadLetterQueue" in w for w in watched)),
        ("the topic is made only for an email without an existing topic",
         r["NotificationTopic"]["Condition"] == "CreateNotificationTopic"
         and t["Conditions"]["CreateNotificationTopic"] == {"Fn::And": [{"Condition": "HasNotificationEmail"},
                                                                        {"Fn::Not": [{"Condition": "HasNotificationTopicArn"}]}]}),
        ("the sweep functions may publish to the topic only",
         publish["Roles"] == [{"Ref": "SweeperFunctionRole"}]
         and [(st["Action"], st["Resource"]) for st in publish["PolicyDocument"]["Statement"]] == [("sns:Publish", topic)]
         and r["SweeperNotificationAccess"]["Condition"] == "HasNotifications"),
        ("both sweep functions know the topic",
         all(r[f]["Properties"]["Environment"]["Variables"]["AMI_SWEEPER_NOTIFY_TOPIC_ARN"]
             == {"Fn::If": ["HasNotifications", topic, ""]} for f in ("SweeperFunction", "PairSweeperFunction"))),
        ("the dashboard has the widgets docs/operations.md lists", titles == DASHBOARD_WIDGETS),
        ("the dashboard's alarm widget lists every alarm",
         sorted(re.findall(r"\$\{(\w+Alarm)\.Arn\}", body_sub)) == sorted(alarms)),
        ("the dashboard graphs only metrics the report emits",
         graphed - {"Kept_"} <= emitted_metrics(root) and len(graphed) >= 8),
    ]


# The resource types the Serverless Application Repository deploys ("List of Supported
# AWS Resources" in its developer guide), for the services this template uses.
SAR_SUPPORTED = {
    "AWS::Serverless::Function", "AWS::Serverless::Api", "AWS::Serverless::Application",
    "AWS::Serverless::LayerVersion", "AWS::Serverless::SimpleTable",
    "AWS::Lambda::Function", "AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping",
    "AWS::Lambda::Alias", "AWS::Lambda::Version", "AWS::Lambda::LayerVersion",
    "AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy",
    "AWS::Events::Rule", "AWS::SQS::Queue", "AWS::SQS::QueuePolicy",
    "AWS::SNS::Topic", "AWS::SNS::Subscription", "AWS::SNS::TopicPolicy",
    "AWS::S3::Bucket", "AWS::S3::BucketPolicy",
    "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard",
    "AWS::Logs::LogGroup", "AWS::Logs::MetricFilter", "AWS::SSM::Parameter",
}
# What SAM makes of a function and each of its event sources.
SAM_EXPANDS = {
    "function": {"AWS::Lambda::Function", "AWS::IAM::Role"},
    "Schedule": {"AWS::Events::Rule", "AWS::Lambda::Permission"},
    "CloudWatchEvent": {"AWS::Events::Rule", "AWS::Lambda::Permission"},
    "EventBridgeRule": {"AWS::Events::Rule", "AWS::Lambda::Permission"},
    "SQS": {"AWS::Lambda::EventSourceMapping"},
}
# The capabilities a deployer acknowledges (the Repository's "Acknowledging application
# capabilities"), and the resource types that need each.
SAR_CAPABILITIES = {
    "CAPABILITY_IAM": {"AWS::IAM::Group", "AWS::IAM::InstanceProfile", "AWS::IAM::Policy",
                       "AWS::IAM::Role"},
    "CAPABILITY_RESOURCE_POLICY": {"AWS::Lambda::Permission", "AWS::IAM::Policy",
                                   "AWS::ApplicationAutoScaling::ScalingPolicy",
                                   "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy",
                                   "AWS::SNS::TopicPolicy"},
}
# The capabilities docs/deployment.md tells a deployer to acknowledge.
NEEDED_CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_RESOURCE_POLICY"]


def deployed_types(t: dict) -> set:
    """Every resource type the stack creates: the template's and those SAM expands to."""
    types = set()
    for res in t["Resources"].values():
        types.add(res["Type"])
        if res["Type"] == "AWS::Serverless::Function":
            types |= SAM_EXPANDS["function"]
            for ev in res["Properties"].get("Events", {}).values():
                types |= SAM_EXPANDS[ev["Type"]]
    return types


def cargo_field(root: str, name: str) -> str:
    text = open(os.path.join(root, "Cargo.toml")).read().split("[package]")[1]
    return re.search(rf'^{name} = "([^"]+)"', text, re.M).group(1)


def sar_checks(t: dict, root: str) -> list:
    """The Serverless Application Repository metadata (`sam publish`), the resource types
    it can deploy, and the capabilities a deployer acknowledges."""
    app = t.get("Metadata", {}).get("AWS::ServerlessRepo::Application", {})
    types = deployed_types(t)
    needed = sorted(c for c, kinds in SAR_CAPABILITIES.items() if types & kinds)
    labels = app.get("Labels", [])
    return [
        ("SAR metadata: name, author, description within the Repository's limits",
         re.fullmatch(r"[a-zA-Z0-9\-]{1,140}", app.get("Name", "")) is not None
         and re.fullmatch(r"[a-z0-9](([a-z0-9]|-(?!-))*[a-z0-9])?", app.get("Author", "")) is not None
         and 1 <= len(app.get("Description", "")) <= 256),
        ("SAR metadata: the SPDX license and the semantic version are Cargo.toml's",
         app.get("SpdxLicenseId") == cargo_field(root, "license")
         and app.get("SemanticVersion") == cargo_field(root, "version")),
        ("SAR metadata: home page and source are https URLs; the README is the project's",
         all(str(app.get(k, "")).startswith("https://") for k in ("HomePageUrl", "SourceCodeUrl"))
         and app.get("ReadmeUrl") == "README.md" and os.path.isfile(os.path.join(root, "README.md"))),
        ("SAR metadata: 1 to 10 labels, each of the allowed characters",
         1 <= len(labels) <= 10
         and all(re.fullmatch(r"[a-zA-Z0-9+\-_:/@]{1,127}", l) for l in labels)),
        ("the docs' base URL is the home page's",
         t["Parameters"]["DocsBaseUrl"]["Default"].startswith(app.get("HomePageUrl", "-"))),
        (f"every resource type (SAM's expansions included) is one the Repository deploys: "
         f"{sorted(types - SAR_SUPPORTED) or 'yes'}", types <= SAR_SUPPORTED),
        (f"the capabilities docs/deployment.md names are the ones needed: {needed}",
         needed == NEEDED_CAPABILITIES
         and all(c in open(os.path.join(root, "docs", "deployment.md")).read() for c in needed)),
    ]


def runbook_checks(t: dict, root: str) -> list:
    """Every alarm's description links to its own section of docs/operations.md."""
    path = os.path.join(root, "docs", "operations.md")
    headings = set(re.findall(r"^#{2,4} (\w+Alarm)\s*$", open(path).read(), re.M)) if os.path.isfile(path) else set()
    alarms = {k: v["Properties"] for k, v in t["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    unlinked = sorted(k for k, a in alarms.items()
                      if f"${{DocsBaseUrl}}/operations.md#{k.lower()}" not in str(a["AlarmDescription"].get("Fn::Sub", "")
                                                                                if isinstance(a["AlarmDescription"], dict) else ""))
    return [
        (f"every alarm's description links to its runbook section: {unlinked or 'yes'}", not unlinked),
        (f"docs/operations.md has a section per alarm: {sorted(set(alarms) - headings) or 'yes'}",
         set(alarms) <= headings),
    ]

def reference_object_checks(r: dict) -> bool:
    """The sweeper's access to usage.reference_objects: exactly ListBucket and
    GetBucketLocation on the buckets, GetObject in them and kms:Decrypt on the named keys,
    all from the template's parameters (`s3_reference_reads` in the adapter match)."""
    access = r["SweeperReferenceObjectAccess"]
    sts = access["Properties"]["PolicyDocument"]["Statement"]
    code = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "src", "adapters", "aws", "reference_objects.rs")).read()
    recorded = set(re.findall(r'record\("([A-Za-z0-9]+)"\)', code))
    return (access["Condition"] == "HasReferenceBuckets"
            and [st["Action"] for st in sts[:2]] == [["s3:ListBucket", "s3:GetBucketLocation"], "s3:GetObject"]
            and all("ReferenceObjectBuckets" in str(st["Resource"]) for st in sts[:2])
            and sts[2]["Fn::If"][1] == {"Effect": "Allow", "Action": "kms:Decrypt",
                                        "Resource": {"Ref": "ReferenceObjectKeys"}}
            and recorded == {"ListObjectsV2", "GetObject"})


def main() -> int:
    t = cfn_yaml.load(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")
    g = t["Globals"]["Function"]
    r = t["Resources"]
    sweeper, worker = r["SweeperFunction"]["Properties"], r["CleanupFunction"]["Properties"]
    queue = r["CleanupQueue"]["Properties"]
    sqs_event = worker["Events"]["CleanupJobs"]["Properties"]
    statements = [
        s for p in sweeper["Policies"] + worker["Policies"] if isinstance(p, dict) and "Statement" in p
        for s in p["Statement"]
    ]
    marks = [s for s in statements if s.get("Action") == "ec2:CreateTags"
             and "snapshot" in str(s["Resource"])]
    stage_tags = [s for s in statements if s.get("Action") == "ec2:CreateTags"
                  and "image" in str(s["Resource"])]
    forget = [s for s in statements if s.get("Action") == "ec2:DeleteTags"]
    worker_actions = {a for p in worker["Policies"] if isinstance(p, dict) and "Statement" in p
                      for st in p["Statement"]
                      for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    for m in marks:
        m["Resource"] = m["Resource"]["Fn::Sub"] if isinstance(m["Resource"], dict) else m["Resource"]
    actions = [a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code_reads = reads_in_code(root)
    sweeper_reads = {a for p in sweeper["Policies"] if isinstance(p, dict) and "Statement" in p
                     for st in p["Statement"]
                     for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
                     if a.split(":")[0] in READ_ADAPTERS.values()
                     and a.split(":")[1].startswith(("Describe", "List", "Get"))}
    # ssm:GetParameter is granted per parameter (the policy, resolve:ssm: prefixes) apart.
    granted = sweeper_reads | {"ssm:GetParameter"}
    checks = [
        ("every read the code makes is granted (and no read the code does not make)",
         code_reads <= granted and sweeper_reads <= code_reads),
        ("runtime is provided.al2023", g["Runtime"] == "provided.al2023"),
        ("architecture is arm64", g["Architectures"] == ["arm64"]),
        ("handler is bootstrap", g["Handler"] == "bootstrap"),
        ("memory is 128 MB", g["MemorySize"] == 128),
        ("built with cargo-lambda", all(
            r[f]["Metadata"]["BuildMethod"] == "rust-cargolambda" for f in ("SweeperFunction", "CleanupFunction"))),
        ("sweeper timeout is 900 s", sweeper["Timeout"] == 900),
        ("sweeps never overlap", sweeper["ReservedConcurrentExecutions"] == 1),
        ("worker reports batch item failures", sqs_event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]),
        ("worker concurrency is bounded", sqs_event["ScalingConfig"]["MaximumConcurrency"] <= 50),
        ("storage per pair: the worker holds a pair's lease (the report bucket's leases/ only, "
         "read, written, released, and the bucket listed so an absent lease reads as NoSuchKey) for "
         "at most its timeout, under a chain's 180 s wait",
         worker["Environment"]["Variables"].get("AMI_SWEEPER_REPORT_BUCKET") == {"Ref": "ReportBucket"}
         and worker["Environment"]["Variables"].get("AMI_SWEEPER_ACCOUNT_ID") == {"Ref": "AWS::AccountId"}
         and worker["Timeout"] <= 180
         and [(st["Action"], st["Resource"]) for st in statements if st.get("Sid") == "WorkerPairLeases"]
         == [(["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
              {"Fn::Sub": "${ReportBucket.Arn}/leases/*"})]
         and not any("ReportBucket" in str(st["Resource"]) for p in worker["Policies"]
                     if isinstance(p, dict) and "Statement" in p for st in p["Statement"]
                     if st.get("Sid") not in ("WorkerPairLeases", "ListReportBucket"))),
        ("a job left while its pair's chain runs (10 links of 900 s) is not dead-lettered for it",
         queue["RedrivePolicy"]["maxReceiveCount"] >= 10 * 900 / queue["VisibilityTimeout"] + 5),
        ("visibility timeout >= 6x worker timeout", queue["VisibilityTimeout"] >= 6 * worker["Timeout"]),
        ("poison messages go to the DLQ", queue["RedrivePolicy"]["maxReceiveCount"] >= 2
         and "CleanupDeadLetterQueue" in str(queue["RedrivePolicy"]["deadLetterTargetArn"])),
        ("no wildcard actions", not any(a.endswith("*") for a in actions)),
        ("deregister, delete, the storage mark and the retirement steps are the only EC2 mutations",
         {a for a in actions if a.startswith("ec2:") and not a.startswith(("ec2:Describe", "ec2:List"))}
         == {"ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:CreateTags",
             "ec2:EnableImageDeprecation", "ec2:DisableImage", "ec2:EnableImage",
             "ec2:DisableImageDeprecation", "ec2:DeleteTags", "ec2:CreateImageUsageReport"}),
        ("undoing a retirement removes its three tags from images, and no other tag",
         len(forget) == 1 and "image" in str(forget[0]["Resource"])
         and forget[0]["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]
         == ["ami-sweeper:deprecated-at", "ami-sweeper:disabled-at", "ami-sweeper:disabled-from"]
         and forget[0]["Condition"]["Null"]["aws:TagKeys"] == "false"),
        ("the worker and the pair sweeper can list the OUs a message's account must be under",
         {"organizations:ListAccountsForParent", "organizations:ListOrganizationalUnitsForParent"}
         <= worker_actions),
        ("the worker runs cleanup jobs only, under the stack's ForceDryRun",
         worker["Environment"]["Variables"].get("AMI_SWEEPER_FUNCTION") == "worker"
         and "ForceDryRun" in str(worker["Environment"]["Variables"].get("AMI_SWEEPER_DRY_RUN"))),
        ("refused sweep requests go to the sweep queue's DLQ",
         "SweepDeadLetterQueue" in str(r["PairSweeperFunction"]["Properties"]["Environment"]["Variables"].get("SWEEP_DLQ_URL"))),
        ("retirement tags go on images only, three keys",
         len(stage_tags) == 1 and stage_tags[0]["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]
         == ["ami-sweeper:deprecated-at", "ami-sweeper:disabled-at", "ami-sweeper:disabled-from"]),
        ("the mark may write its two tag keys on snapshots only",
         len(marks) == 1 and marks[0]["Resource"] == "arn:${AWS::Partition}:ec2:*::snapshot/*"
         and marks[0]["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]
         == ["ami-sweeper:storage-of", "ami-sweeper:delete-after"]
         and marks[0]["Condition"]["Null"]["aws:TagKeys"] == "false"),
        ("the sweeper reads snapshots, the Recycle Bin and its rules",
         {"ec2:DescribeSnapshots", "ec2:ListImagesInRecycleBin", "rbin:ListRules", "rbin:GetRule"}
         <= set(actions)),
        ("the sweeper can check the queue before deregistering", "sqs:GetQueueAttributes" in actions),
        ("an alarm on the sweeper's Errors", r["SweeperErrorsAlarm"]["Properties"]["MetricName"] == "Errors"
         and "SweeperFunction" in str(r["SweeperErrorsAlarm"]["Properties"]["Dimensions"])),
        ("an alarm on the report's Failures metric",
         {m["MetricStat"]["Metric"]["MetricName"] for m in r["SweepFailuresAlarm"]["Properties"]["Metrics"]
          if "MetricStat" in m} == {"Failures"}),
        ("in this account only the worker deletes snapshots (pair sweepers delete their pairs' "
         "storage through the member role)", "ec2:DeleteSnapshot" not in str(sweeper["Policies"])),
        ("a DLQ alarm exists", r["CleanupDeadLetterAlarm"]["Type"] == "AWS::CloudWatch::Alarm"),
        ("only the sweeper's role may send to the cleanup queue",
         any(st["Effect"] == "Deny" and st["Action"] == "sqs:SendMessage"
             and "SweeperFunctionRole" in str(st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"])
             for st in r["CleanupQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"])),
        ("deregistrations and snapshot deletions stay in this account and the swept regions",
         all(st["Condition"]["StringEquals"]["aws:ResourceAccount"] == {"Ref": "AWS::AccountId"}
             and "SweepRegions" in str(st["Condition"]["StringEquals"]["aws:RequestedRegion"])
             for st in statements if st["Action"] in ("ec2:DeregisterImage", "ec2:DeleteSnapshot")
             or (isinstance(st["Action"], list) and "ec2:DisableImage" in st["Action"]))),
        ("a hierarchical policy parameter name gets its own ARN (no parameter/ with nothing after)",
         "parameter${PolicyParameterName}" in str(r["SweeperPolicyParameterAccess"])
         and "Select" not in str(r["SweeperPolicyParameterAccess"]["Properties"]["PolicyDocument"])),
        ("no hard-coded partition", "arn:aws:" not in open(sys.argv[1] if len(sys.argv) > 1 else "template.yaml").read()),
        ("the worker knows the policy, the bundle buckets and the DLQ",
         {"AMI_SWEEPER_POLICY", "AMI_SWEEPER_POLICY_PARAMETER", "AMI_SWEEPER_BUNDLE_BUCKETS", "CLEANUP_DLQ_URL"}
         <= set(worker["Environment"]["Variables"])),
        ("the worker can verify jobs and send refused ones to the DLQ only",
         {"ec2:DescribeSnapshots", "ec2:DescribeImages"} <= {a for p in worker["Policies"] if isinstance(p, dict)
                                                             for st in p["Statement"]
                                                             for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
         and r["CleanupRefusedJobs"]["Properties"]["PolicyDocument"]["Statement"][0]["Resource"]
         == {"Fn::GetAtt": ["CleanupDeadLetterQueue", "Arn"]}),
        ("the sweeper reads and marks bundles in the bundle buckets only",
         [st["Action"] for st in r["SweeperBundleAccess"]["Properties"]["PolicyDocument"]["Statement"]]
         == [["s3:ListBucket", "s3:GetBucketLocation"], ["s3:GetObjectTagging", "s3:PutObjectTagging"]]
         and "BundleBuckets" in str(r["SweeperBundleAccess"]["Properties"]["PolicyDocument"])
         and "*" not in str([st["Resource"] for st in r["SweeperBundleAccess"]["Properties"]["PolicyDocument"]["Statement"]]).replace("/*", "")),
        ("reference objects: listed and read in the named buckets only, decrypted with the named keys only",
         reference_object_checks(r)),
        ("event policies are off unless the operator allows them",
         t["Parameters"]["AllowEventPolicy"]["Default"] == "false"
         and sweeper["Environment"]["Variables"]["AMI_SWEEPER_ALLOW_EVENT_POLICY"] == {"Ref": "AllowEventPolicy"}),
        ("the pair sweeper has the sweeper's role and a bounded concurrency",
         r["PairSweeperFunction"]["Properties"]["Role"] == {"Fn::GetAtt": ["SweeperFunctionRole", "Arn"]}
         and r["PairSweeperFunction"]["Properties"]["Events"]["SweepRequests"]["Properties"]
         ["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "PairConcurrency"}),
        ("pairs run at an organization's concurrency by default (at least 100, at most "
         "MaximumConcurrency's 1,000)",
         int(t["Parameters"]["PairConcurrency"]["Default"]) >= 100
         and int(t["Parameters"]["PairConcurrency"]["MaxValue"]) <= 1000
         and int(t["Parameters"]["PairConcurrency"]["MinValue"]) >= 2),
        ("continuation: the pair sweeper sends its successor to the sweep queue, holds its "
         "pair's lease under leases/ only, and Lambda's recursive-loop guard stays on "
         "(a chain has at most 10 links, under its 16 hops)",
         r["PairSweeperFunction"]["Properties"]["Environment"]["Variables"].get("SWEEP_QUEUE_URL")
         == {"Ref": "SweepQueue"}
         and r["PairSweeperFunction"]["Properties"].get("RecursiveLoop") == "Terminate"
         and [(st["Action"], st["Resource"]) for st in statements if st.get("Sid") == "PairLeases"]
         == [(["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
              {"Fn::Sub": "${ReportBucket.Arn}/leases/*"})]
         and not any("s3:DeleteObject" in str(st["Action"]) and "ReportBucket" in str(st["Resource"])
                     and st.get("Sid") not in ("PairLeases", "WorkerPairLeases") for st in statements)),
        ("the sweep queue's redrive outlasts a night short of Lambda concurrency (a throttled "
         "pair message counts as a receive: at least 5 receives, AWS's advice for Lambda) and "
         "ends before the next schedule (the receives span under 24 h)",
         r["SweepQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 10
         and "SweepDeadLetterQueue" in str(r["SweepQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
         and (r["SweepQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] - 1)
         * r["SweepQueue"]["Properties"]["VisibilityTimeout"] < 24 * 3600
         and r["SweepQueue"]["Properties"]["VisibilityTimeout"]
         >= 6 * r["PairSweeperFunction"]["Properties"]["Timeout"]),
        ("the worker runs a pair's jobs only while it holds the pair's lease: it knows the report "
         "bucket and its account, reads, writes and deletes leases/ only, and may list the bucket "
         "(without s3:ListBucket S3 answers AccessDenied, not NoSuchKey, for an absent lease, and "
         "no lease could ever be taken)",
         worker["Environment"]["Variables"].get("AMI_SWEEPER_REPORT_BUCKET") == {"Ref": "ReportBucket"}
         and worker["Environment"]["Variables"].get("AMI_SWEEPER_ACCOUNT_ID") == {"Ref": "AWS::AccountId"}
         and [(st["Action"], st["Resource"]) for p in worker["Policies"] if isinstance(p, dict)
              and "Statement" in p for st in p["Statement"] if st.get("Sid") == "WorkerPairLeases"]
         == [(["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
              {"Fn::Sub": "${ReportBucket.Arn}/leases/*"})]
         and all(any(st.get("Action") == "s3:ListBucket"
                     and st.get("Resource") == {"Fn::GetAtt": ["ReportBucket", "Arn"]}
                     for p in f["Policies"] if isinstance(p, dict) and "Statement" in p
                     for st in p["Statement"]) for f in (sweeper, worker))),
        ("an approved plan is read from the stack's report bucket, under reports/ only",
         [(st["Action"], st["Resource"]) for st in statements if st.get("Sid") == "ReadApprovedPlans"]
         == [("s3:GetObject", {"Fn::Sub": "${ReportBucket.Arn}/reports/*"})]),
        ("a single-account sweep's continuation: the sweeper knows the sweep queue, and its "
         "role sends to the cleanup queue, the sweep queue and the sweep DLQ, nothing broader",
         sweeper["Environment"]["Variables"].get("SWEEP_QUEUE_URL") == {"Ref": "SweepQueue"}
         and sorted(str(p["SQSSendMessagePolicy"]["QueueName"]) for p in sweeper["Policies"]
                    if isinstance(p, dict) and "SQSSendMessagePolicy" in p)
         == sorted(str({"Fn::GetAtt": [q, "QueueName"]}) for q in
                   ("CleanupQueue", "SweepQueue", "SweepDeadLetterQueue"))
         and not any("sqs:SendMessage" in str(st.get("Action")) for st in statements)),
        ("only the sweeper's role may send sweep requests",
         any(st["Effect"] == "Deny" and "SweeperFunctionRole" in str(st["Condition"])
             for st in r["SweepQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"])),
        ("approval only: a stack parameter, off by default, reaches the sweeper and the pair "
         "sweeper, with the approved plan's age bound; approved plans are read under the "
         "report bucket's reports/ only",
         t["Parameters"]["ApprovalOnly"]["Default"] == "false"
         and sweeper["Environment"]["Variables"].get("AMI_SWEEPER_APPROVAL_ONLY") == {"Ref": "ApprovalOnly"}
         and r["PairSweeperFunction"]["Properties"]["Environment"]["Variables"].get("AMI_SWEEPER_APPROVAL_ONLY")
         == {"Ref": "ApprovalOnly"}
         and sweeper["Environment"]["Variables"].get("AMI_SWEEPER_APPROVAL_MAX_AGE_DAYS")
         == {"Ref": "ApprovedPlanMaxAgeDays"}
         and int(t["Parameters"]["ApprovedPlanMaxAgeDays"]["Default"]) == 7
         and [(st["Action"], st["Resource"]) for st in statements if st.get("Sid") == "ReadApprovedPlans"]
         == [("s3:GetObject", {"Fn::Sub": "${ReportBucket.Arn}/reports/*"})]
         and any(st.get("Sid") == "ListReportBucket" and st["Action"] == "s3:ListBucket"
                 for st in statements)),
        ("member roles only: sts:AssumeRole names the member role",
         all("MemberRoleName" in str(st["Resource"]) for st in statements if st["Action"] == "sts:AssumeRole")),
    ]
    checks += notification_checks(t, root)
    checks += sar_checks(t, root)
    checks += runbook_checks(t, root)
    if len(sys.argv) > 2:
        checks += member_checks(sys.argv[2], set(actions))
    for name, ok in checks:
        print(f"{'ok' if ok else 'FAILED'}: {name}")
        if not ok:
            return 1
    print(f"{len(checks)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
