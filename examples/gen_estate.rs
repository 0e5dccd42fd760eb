//! Writes a synthetic estate as AWS CLI JSON for benchmarks:
//! `cargo run --release --example gen_estate -- COUNT OUT_DIR`.
//!
//! Lineages of nightly builds with `app`/`env` tags, some in use, some protected,
//! some shared, a few instance-store images; deterministic for a given COUNT. A `shard`
//! tag (0-9, by index) spreads the images evenly over the ten-rule benchmark policy.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: gen_estate COUNT OUT_DIR");
    let out = PathBuf::from(args.next().expect("usage: gen_estate COUNT OUT_DIR"));
    std::fs::create_dir_all(&out).expect("create output dir");

    let apps = [
        "web", "api", "batch", "worker", "search", "billing", "auth", "etl",
    ];
    let envs = ["prod", "staging", "dev"];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z").unwrap();
    let mut images = String::from("{\"Images\": [\n");
    let mut in_use = Vec::new();
    for i in 0..count {
        let app = apps[i % apps.len()];
        let env = envs[(i / apps.len()) % envs.len()];
        let age_minutes = (i / (apps.len() * envs.len())) as i64 * 1440 + (next() % 600) as i64;
        let created = base - chrono::TimeDelta::minutes(age_minutes);
        let r = next() % 100;
        let mut extra = String::new();
        if r < 2 {
            extra.push_str(r#", "DeregistrationProtection": "enabled""#);
        }
        if r == 4 {
            in_use.push(i);
        }
        let (root, mappings, location) = if r == 5 {
            (
                "instance-store",
                String::from("[]"),
                format!("bench-bundles/{app}/{app}-{env}-{i}.manifest.xml"),
            )
        } else {
            (
                "ebs",
                format!(
                    r#"[{{"DeviceName": "/dev/xvda", "Ebs": {{"SnapshotId": "snap-{i:017x}", "VolumeSize": 8, "VolumeType": "gp3"}}}}]"#
                ),
                format!("123456789012/{app}-{env}-{i}"),
            )
        };
        let _ = write!(
            images,
            r#"{}  {{"ImageId": "ami-{i:017x}", "Name": "{app}-{env}-{stamp}", "CreationDate": "{created}", "State": "available", "OwnerId": "123456789012", "Public": {public}, "RootDeviceType": "{root}", "ImageLocation": "{location}", "BlockDeviceMappings": {mappings}, "Tags": [{{"Key": "app", "Value": "{app}"}}, {{"Key": "env", "Value": "{env}"}}, {{"Key": "team", "Value": "platform"}}, {{"Key": "shard", "Value": "{shard}"}}]{extra}}}"#,
            if i == 0 { "" } else { ",\n" },
            public = r == 3,
            stamp = created.format("%Y%m%d%H%M"),
            shard = i % 10,
            created = created.format("%Y-%m-%dT%H:%M:%S.000Z"),
        );
    }
    images.push_str("\n]}\n");
    std::fs::write(out.join("images.json"), images).expect("write images.json");

    let mut instances = String::from(r#"{"Reservations": [{"Instances": ["#);
    for (n, i) in in_use.iter().enumerate() {
        let _ = write!(
            instances,
            r#"{}{{"InstanceId": "i-{i:017x}", "ImageId": "ami-{i:017x}", "State": {{"Code": 80, "Name": "stopped"}}}}"#,
            if n == 0 { "" } else { ", " }
        );
    }
    instances.push_str("]}]}\n");
    std::fs::write(out.join("instances.json"), instances).expect("write instances.json");
    eprintln!(
        "wrote {count} images ({} in use) to {}",
        in_use.len(),
        out.display()
    );
}
