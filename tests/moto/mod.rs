//! Test harness for the local EC2 emulator (moto server): starts one on a free loopback
//! port with an optional seed of old images, and always stops it.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server behind its front door, the proxy with no throttling that answers
/// what moto lacks (`DescribeImageReferences`, `ListImagesInRecycleBin`, Image Builder's
/// `ListImageRecipes`) and injects faults; both killed on drop.
pub struct Moto {
    /// The front proxy (declared first: dropped before the server).
    front: Option<Throttle>,
    child: Child,
    /// `http://127.0.0.1:PORT` of the front proxy: what clients use.
    pub endpoint: String,
    /// `http://127.0.0.1:PORT` of moto itself (for proxies of a test's own).
    pub upstream: String,
    dir: PathBuf,
}

fn moto_binary() -> String {
    std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_string())
}

impl Moto {
    /// Starts a server; `seed` is written as the `MOTO_AMIS_PATH` file (images that
    /// appear in every region, with the creation dates given).
    pub fn start(seed: Option<serde_json::Value>) -> Moto {
        Self::start_with(seed, false)
    }

    /// A server with moto's own public AMIs (owned by Amazon, so never the account's):
    /// what instances in accounts other than the default one launch from (moto cannot load
    /// a seed file into a second account).
    pub fn start_with_public_amis() -> Moto {
        Self::start_with(None, true)
    }

    fn start_with(seed: Option<serde_json::Value>, public_amis: bool) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("ami-sweeper-moto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let mut cmd = Command::new(moto_binary());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env(
                "MOTO_EC2_LOAD_DEFAULT_AMIS",
                if public_amis { "true" } else { "false" },
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(seed) = seed {
            let path = dir.join("amis.json");
            std::fs::File::create(&path)
                .unwrap()
                .write_all(seed.to_string().as_bytes())
                .unwrap();
            cmd.env("MOTO_AMIS_PATH", &path);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); `make test` installs it (set MOTO_SERVER to its path)",
                moto_binary()
            )
        });
        let upstream = format!("http://127.0.0.1:{port}");
        let mut moto = Moto {
            front: None,
            child,
            endpoint: upstream.clone(),
            upstream,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let front = Throttle::start_before(&moto.upstream, &["--no-throttle"]);
        moto.endpoint = front.endpoint.clone();
        moto.front = Some(front);
        moto
    }

    /// The front proxy, to set what it answers for moto or to inject faults.
    pub fn front(&self) -> &Throttle {
        self.front.as_ref().expect("started")
    }

    /// An SDK configuration pointed at this server with dummy credentials.
    pub async fn config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }

    /// Environment for running the binary against this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The ids of the account's images, as the emulator now has them.
pub async fn image_ids(config: &aws_config::SdkConfig) -> std::collections::BTreeSet<String> {
    aws_sdk_ec2::Client::new(config)
        .describe_images()
        .owners("self")
        .send()
        .await
        .unwrap()
        .images()
        .iter()
        .map(|i| i.image_id().unwrap().to_string())
        .collect()
}

/// Starts the proxy in front of `moto` with its default buckets scaled up so far that
/// nothing is throttled: for fault injection and the Recycle Bin moto lacks.
pub fn fault_proxy(moto: &Moto) -> Throttle {
    Throttle::start(moto, &["--scale", "1000"])
}

/// The ids of the account's snapshots, as the emulator now has them.
pub async fn snapshot_ids(config: &aws_config::SdkConfig) -> std::collections::BTreeSet<String> {
    aws_sdk_ec2::Client::new(config)
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap()
        .snapshots()
        .iter()
        .map(|s| s.snapshot_id().unwrap().to_string())
        .collect()
}

/// The id of an image's first EBS snapshot, as the emulator has it.
pub async fn snapshot_of(config: &aws_config::SdkConfig, image_id: &str) -> String {
    aws_sdk_ec2::Client::new(config)
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .unwrap()
        .images()[0]
        .block_device_mappings()
        .iter()
        .find_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
        .unwrap_or_else(|| panic!("{image_id} has no EBS snapshot"))
        .to_string()
}

/// The keys of a bucket's objects, as the emulator now has them.
pub async fn object_keys(
    config: &aws_config::SdkConfig,
    bucket: &str,
) -> std::collections::BTreeSet<String> {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
    .list_objects_v2()
    .bucket(bucket)
    .send()
    .await
    .unwrap()
    .contents()
    .iter()
    .map(|o| o.key().unwrap().to_string())
    .collect()
}

/// A seed entry for an old EBS image owned by the test account.
pub fn seed_image(
    id: &str,
    name: &str,
    created: &str,
    tags: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "ami_id": id,
        "owner_id": "123456789012",
        "name": name,
        "creation_date": created,
        "state": "available",
        "root_device_type": "ebs",
        "root_device_name": "/dev/xvda",
        "architecture": "x86_64",
        "virtualization_type": "hvm",
        "hypervisor": "xen",
        "image_type": "machine",
        "public": false,
        "tags": tags,
    })
}

/// The throttling proxy (`scripts/throttle_proxy.py`, EC2's token buckets) in front of
/// a server; killed on drop.
pub struct Throttle {
    child: Child,
    /// `http://127.0.0.1:PORT` of the proxy.
    pub endpoint: String,
}

impl Throttle {
    /// Starts a proxy of a test's own before `moto` itself (in place of the front door,
    /// with its stubs) with these extra arguments (`--scale`, `--bucket`).
    pub fn start(moto: &Moto, args: &[&str]) -> Throttle {
        Self::start_before(&moto.upstream, args)
    }

    /// Starts the proxy before `upstream`.
    fn start_before(upstream: &str, args: &[&str]) -> Throttle {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/throttle_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(upstream)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the throttling proxy");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let endpoint = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the throttling proxy did not start: {line:?}"))
            .trim()
            .to_string();
        Throttle { child, endpoint }
    }

    /// Environment for running the binary through the proxy.
    pub fn env(&self, moto: &Moto) -> Vec<(&'static str, String)> {
        let mut env = moto.env();
        env[0] = ("AWS_ENDPOINT_URL", self.endpoint.clone());
        env
    }

    /// The proxy's counts: `{"actions": {ACTION: {"accepted": N, "throttled": N}}, ...}`.
    pub fn stats(&self) -> serde_json::Value {
        self.control("GET", "/__throttle__", "")
    }

    /// Replaces the proxy's active faults (see `scripts/throttle_proxy.py`).
    pub fn set_faults(&self, faults: serde_json::Value) {
        self.control("POST", "/__faults__", &faults.to_string());
    }

    /// The AMI ids the proxy's emulated Recycle Bin holds.
    pub fn set_recycle_bin(&self, image_ids: &[&str]) {
        self.control(
            "POST",
            "/__recycle_bin__",
            &serde_json::json!(image_ids).to_string(),
        );
    }

    /// What AWS's reference check answers: `(image, resource type, ARN)` triples.
    pub fn set_image_references(&self, refs: &[(&str, &str, &str)]) {
        let mut map = serde_json::Map::new();
        for (image, kind, arn) in refs {
            let list = map
                .entry(image.to_string())
                .or_insert_with(|| serde_json::json!([]));
            list.as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": kind, "arn": arn}));
        }
        self.control(
            "POST",
            "/__image_references__",
            &serde_json::Value::Object(map).to_string(),
        );
    }

    /// What AWS's image usage reports say: image → account → instances and templates.
    pub fn set_image_usage(&self, usage: serde_json::Value) {
        self.control("POST", "/__image_usage__", &usage.to_string());
    }

    /// The Recycle Bin's retention rules, each as `aws rbin get-rule` prints it.
    pub fn set_recycle_bin_rules(&self, rules: serde_json::Value) {
        self.control("POST", "/__recycle_bin_rules__", &rules.to_string());
    }

    /// Image Builder's image recipes: `(ARN, parent image)` pairs.
    pub fn set_image_recipes(&self, recipes: &[(&str, &str)]) {
        let list: Vec<serde_json::Value> = recipes
            .iter()
            .map(
                |(arn, parent)| serde_json::json!({"arn": arn, "name": arn, "parentImage": parent}),
            )
            .collect();
        self.control(
            "POST",
            "/__image_recipes__",
            &serde_json::json!(list).to_string(),
        );
    }

    fn control(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        use std::io::Read;
        let addr = self.endpoint.trim_start_matches("http://");
        let mut conn = TcpStream::connect(addr).unwrap();
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        let reply = text.split_once("\r\n\r\n").expect("an HTTP response").1;
        serde_json::from_str(reply).unwrap()
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SDK configuration of a member account, through the role a sweep assumes there
/// (moto lets any role be assumed and then acts as that account).
pub async fn member_config(
    hub: &aws_config::SdkConfig,
    account: &str,
    region: &str,
) -> aws_config::SdkConfig {
    let provider = aws_config::sts::AssumeRoleProvider::builder(format!(
        "arn:aws:iam::{account}:role/ami-sweeper-member"
    ))
    .session_name("test-setup")
    .configure(hub)
    .build()
    .await;
    hub.to_builder()
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build()
}

/// One of moto's public AMIs (`Moto::start_with_public_amis`): what member accounts'
/// instances launch from.
pub async fn public_ami(hub: &aws_config::SdkConfig) -> String {
    aws_sdk_ec2::Client::new(hub)
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap()
        .images()[0]
        .image_id()
        .unwrap()
        .to_string()
}

/// Bakes `n` images in an account's region from `base`; returns their ids and the id of
/// the instance they were made from.
pub async fn bake(config: &aws_config::SdkConfig, base: &str, n: usize) -> (Vec<String>, String) {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let run = ec2
        .run_instances()
        .image_id(base)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..n {
        let img = ec2
            .create_image()
            .instance_id(&instance)
            .name(format!("build-{i}"))
            .send()
            .await
            .unwrap();
        ids.push(img.image_id().unwrap().to_string());
    }
    (ids, instance)
}

/// Tags a resource (an image, a snapshot) of the account `config` acts as.
pub async fn tag(config: &aws_config::SdkConfig, resource: &str, tags: &[(&str, &str)]) {
    let mut req = aws_sdk_ec2::Client::new(config)
        .create_tags()
        .resources(resource);
    for (k, v) in tags {
        req = req.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
    }
    req.send().await.unwrap();
}

/// A path-style S3 client on the emulator (what moto serves).
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// An organization in the emulator, created by the hub (the default account).
pub struct OrgBuilder {
    client: aws_sdk_organizations::Client,
    /// The root's id (`r-...`).
    pub root: String,
}

impl OrgBuilder {
    /// Creates the organization.
    pub async fn create(hub: &aws_config::SdkConfig) -> OrgBuilder {
        let client = aws_sdk_organizations::Client::new(hub);
        client.create_organization().send().await.unwrap();
        let root = client.list_roots().send().await.unwrap().roots()[0]
            .id()
            .unwrap()
            .to_string();
        OrgBuilder { client, root }
    }

    /// A new OU under `parent`; its id.
    pub async fn ou(&self, parent: &str, name: &str) -> String {
        self.client
            .create_organizational_unit()
            .parent_id(parent)
            .name(name)
            .send()
            .await
            .unwrap()
            .organizational_unit()
            .unwrap()
            .id()
            .unwrap()
            .to_string()
    }

    /// A new account, moved under `parent`; its id.
    pub async fn account(&self, name: &str, parent: &str) -> String {
        let id = self
            .client
            .create_account()
            .email(format!("{name}@example.com"))
            .account_name(name)
            .send()
            .await
            .unwrap()
            .create_account_status()
            .unwrap()
            .account_id()
            .unwrap()
            .to_string();
        self.client
            .move_account()
            .account_id(&id)
            .source_parent_id(&self.root)
            .destination_parent_id(parent)
            .send()
            .await
            .unwrap();
        id
    }
}
