#!/usr/bin/env python3
"""The main job on a fresh machine: ami-sweeper cleaning up an emulated account.

usage: demo.py BINARY MOTO_SERVER [--format table|json]

Starts the local EC2 emulator (moto server) on a free loopback port, seeds a realistic
estate, shows the dry-run plan, runs the nightly sweep for real and prints its report.
The emulator is stopped whatever happens, Ctrl-C included. Run it with the emulator's
virtualenv Python (it has boto3): `make demo` does.
"""
import datetime as dt
import json
import urllib.request
import os
import signal
import subprocess
import sys
import tempfile

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import emulator  # noqa: E402

ACCOUNT = "123456789012"
# The emulator stamps snapshots with the real clock, so the demo's "now" is set a week
# ahead of today: the snapshots it leaves behind on purpose are then past the policy's
# 7-day orphan age. Every image's age is relative to it, so the figures never change.
NOW = (dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
       + dt.timedelta(days=8))
MANUAL = ("web-manual-a", "web-manual-b", "web-manual-c")
MANIFEST = """<?xml version="1.0"?><manifest><version>2007-10-10</version><image>
<name>legacy-20250301</name><parts count="3">
<part index="0"><filename>legacy-20250301.part.0</filename></part>
<part index="1"><filename>legacy-20250301.part.1</filename></part>
<part index="2"><filename>legacy-20250301.part.2</filename></part>
</parts></image></manifest>"""


def image(ami, name, created, tags, **extra):
    entry = {
        "ami_id": ami, "owner_id": ACCOUNT, "name": name,
        "creation_date": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "state": "available", "root_device_type": "ebs", "root_device_name": "/dev/xvda",
        "architecture": "x86_64", "virtualization_type": "hvm", "hypervisor": "xen",
        "image_type": "machine", "tags": tags,
    }
    entry.update(extra)
    return entry


CANARY_STACK = """{"Parameters": {"ImageId": {"Type": "AWS::EC2::Image::Id"}},
 "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}"""


def estate():
    """A year of nightly builds for three apps, a weekly Image Builder lineage, AWS Backup
    copies, disabled and failed images and an old instance-store image."""
    images, n = [], 0

    def ami():
        nonlocal n
        n += 1
        return "ami-%017x" % (0xd000 + n)

    for app in ("web", "api", "worker"):
        for day in range(365):
            created = NOW - dt.timedelta(days=day, hours=2)
            images.append(image(ami(), f"{app}-{created:%Y%m%d}", created,
                                {"app": app, "env": "prod", "team": "platform"}))
    for week in range(26):
        created = NOW - dt.timedelta(weeks=week, hours=5)
        arn = f"arn:aws:imagebuilder:us-east-1:{ACCOUNT}:image/golden-base/1.0.{26 - week}/1"
        images.append(image(ami(), f"golden-base-1.0.{26 - week}", created,
                            {"app": "golden-base", "Ec2ImageBuilderArn": arn,
                             "CreatedBy": "EC2 Image Builder"}))
    for i, days in enumerate((40, 70, 100)):
        created = NOW - dt.timedelta(days=days)
        images.append(image(ami(), f"AwsBackup_web-copy-{i}", created,
                            {"aws:backup:source-resource": f"arn:aws:ec2:us-east-1::image/ami-{i}"}))
    images.append(image(ami(), "web-legal-hold-20250101", NOW - dt.timedelta(days=694),
                        {"app": "web", "retain": "legal-hold"}))
    images.append(image(ami(), "api-disabled-20250601", NOW - dt.timedelta(days=543),
                        {"app": "api-old"}, state="disabled"))
    images.append(image(ami(), "worker-failed-20250701", NOW - dt.timedelta(days=513),
                        {"app": "worker-old"}, state="failed"))
    # Three images someone deregistered by hand (below), leaving their snapshots behind.
    for name in MANUAL:
        i = ami()
        images.append(image(i, name, NOW - dt.timedelta(days=300), {"app": "web-manual"},
                            snapshot_description=f"Created by CreateImage(i-0demo) for {i}"))
    images.append(image(ami(), "web-legacy-20250301", NOW - dt.timedelta(days=635),
                        {"app": "web"}, root_device_type="instance-store",
                        image_location="legacy-bundles/legacy/legacy-20250301.manifest.xml"))
    return images


def furnish(endpoint, images):
    """What a real account has besides images: users of old images, shares, bundles."""
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2, asg, s3 = boto3.client("ec2", **kw), boto3.client("autoscaling", **kw), boto3.client("s3", **kw)
    by_name = {i["name"]: i["ami_id"] for i in images}
    day = lambda app, d: by_name[f"{app}-{NOW - dt.timedelta(days=d, hours=2):%Y%m%d}"]
    inst = ec2.run_instances(ImageId=day("web", 200), InstanceType="t3.micro", MinCount=1, MaxCount=1)
    ec2.stop_instances(InstanceIds=[inst["Instances"][0]["InstanceId"]])
    ec2.create_launch_template(LaunchTemplateName="api",
                               LaunchTemplateData={"ImageId": day("api", 120), "InstanceType": "t3.small"})
    ec2.create_launch_template_version(LaunchTemplateName="api",
                                       LaunchTemplateData={"ImageId": day("api", 0), "InstanceType": "t3.small"})
    asg.create_launch_configuration(LaunchConfigurationName="worker-2026-06",
                                    ImageId=day("worker", 150), InstanceType="t3.small")
    # A stack pinned to an old image: its next update or scale-out launches it.
    boto3.client("cloudformation", **kw).create_stack(
        StackName="web-canary", TemplateBody=CANARY_STACK,
        Parameters=[{"ParameterKey": "ImageId", "ParameterValue": day("web", 250)}])
    ec2.modify_image_attribute(ImageId=day("web", 90),
                               LaunchPermission={"Add": [{"Group": "all"}]})
    ec2.modify_image_attribute(ImageId=day("api", 60),
                               LaunchPermission={"Add": [{"UserId": "111122223333"}]})
    s3.create_bucket(Bucket="legacy-bundles")
    s3.put_object(Bucket="legacy-bundles", Key="legacy/legacy-20250301.manifest.xml", Body=MANIFEST)
    for p in range(3):
        s3.put_object(Bucket="legacy-bundles", Key=f"legacy/legacy-20250301.part.{p}", Body=b"x" * 1024)
    s3.put_object(Bucket="legacy-bundles", Key="legacy/README-do-not-delete.txt", Body=b"unrelated")
    # Deregistered by hand, snapshots left behind; one snapshot is kept on purpose.
    for name in MANUAL:
        ami = by_name[name]
        snap = ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        ec2.deregister_image(ImageId=ami)
        if name == MANUAL[-1]:
            ec2.create_tags(Resources=[snap], Tags=[{"Key": "retain", "Value": "audit"}])
    return s3


def main():
    binary, moto = sys.argv[1], sys.argv[2]
    fmt = "json" if "--format" in sys.argv and sys.argv[sys.argv.index("--format") + 1] == "json" else "table"
    printed = [0]

    def say(*a):
        text = " ".join(str(x) for x in a)
        printed[0] += text.count("\n") + 1
        print(text, file=sys.stderr if fmt == "json" else sys.stdout, flush=True)

    def run(cmd):
        """Runs the binary, passing its output through (counted, for the closing note)."""
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(out.stdout)
        sys.stdout.flush()
        if fmt == "table":
            printed[0] += out.stdout.count("\n")
        return out
    tmp = tempfile.mkdtemp(prefix="ami-sweeper-demo-")
    images = estate()
    seed = os.path.join(tmp, "amis.json")
    with open(seed, "w") as f:
        json.dump(images, f)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    server, upstream = emulator.start(moto, seed)
    # The proxy answers what the emulator lacks (the Recycle Bin's rules and listing,
    # DescribeImageReferences); its buckets are scaled so far up that it never throttles.
    proxy, endpoint = emulator.start_proxy(upstream, 1000)
    # One Recycle Bin rule: api images stay restorable for 14 days after deregistration.
    bin_rule = [{"Identifier": "api-14d", "ResourceType": "EC2_IMAGE",
                 "RetentionPeriod": {"RetentionPeriodValue": 14, "RetentionPeriodUnit": "DAYS"},
                 "ResourceTags": [{"ResourceTagKey": "app", "ResourceTagValue": "api"}],
                 "ExcludeResourceTags": [], "Status": "available", "LockState": "unlocked"}]
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/__recycle_bin_rules__", data=json.dumps(bin_rule).encode(), method="POST"))
    try:
        say(f"== local EC2 emulator on {endpoint}: {len(images)} images "
            "(a year of nightly web/api/worker builds, a weekly Image Builder lineage, "
            "AWS Backup copies, a legal hold, disabled, failed and instance-store images)")
        s3 = furnish(endpoint, images)
        say("   in use: a stopped instance (web, 200 days old), launch template version 1 "
            "(api, 120 days), a launch configuration (worker, 150 days), a CloudFormation stack's "
            "ImageId parameter (web, 250 days); shared: one public "
            "web image, one api image shared with account 111122223333")
        say(f"   deregistered by hand, snapshots left behind: {', '.join(MANUAL)} "
            "(the last one's snapshot tagged retain=audit: kept on purpose)")
        say("   Recycle Bin: a rule keeps api images restorable for 14 days, so their snapshots "
            "wait (tagged ami-sweeper:delete-after) instead of going with them")
        say("   not representable in the emulator, so not shown: deregistration protection, "
            "LastLaunchedTime (recently launched), snapshots shared between images")
        env = emulator.client_env(endpoint)
        policy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policy.json")
        base = [binary, "sweep", "--policy", policy, "--now", NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "--rate", "200", "--describe-rate", "200", "--retry-delay", "1",
                "--bundle-buckets", "legacy-bundles"]
        say(f"== policy {os.path.relpath(policy)}: keep 7 per app, nothing younger than 30 days; "
            "reclaim snapshots left behind by others after 7 days")
        if fmt == "table":
            say("== the plan (dry run: nothing changes)")
            dry = run(base + ["--dry-run", "--format", "table"])
            if dry.returncode not in (0, 1):
                return dry.returncode
            say("== the nightly sweep (for real; the emulator's rate, not AWS's 5/s)")
        real = run(base + ["--format", fmt])
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="legacy-bundles").get("Contents", []))
        say(f"== s3://legacy-bundles after the sweep: {', '.join(keys)}")
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="demo", aws_secret_access_key="demo")
        waiting = [(s["SnapshotId"], {t["Key"]: t["Value"] for t in s.get("Tags", [])})
                   for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
        waiting = [(i, t) for i, t in waiting if "ami-sweeper:delete-after" in t]
        say(f"== snapshots waiting for their AMI to leave the Recycle Bin: {len(waiting)}")
        for sid, t in sorted(waiting)[:3]:
            say(f"   {sid} of {t['ami-sweeper:storage-of']}: deleted by the first sweep after "
                f"{t['ami-sweeper:delete-after']}")
        if fmt == "table":
            say(f"== {printed[0] + 1} lines: the plan folds runs of alike images into one line "
                "each; every image's facts are in --format json")
        return real.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        emulator.stop(proxy)
        emulator.stop(server)


if __name__ == "__main__":
    sys.exit(main())
