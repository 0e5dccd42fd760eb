//! The bootstrap binary under a real Lambda Runtime API (cargo-lambda's emulator,
//! offline on loopback): proves the runtime wiring, not just the handler.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn cargo_lambda() -> String {
    std::env::var("CARGO_LAMBDA").unwrap_or_else(|_| "cargo-lambda".to_string())
}

pub(crate) fn invoke(port: u16, data: &str) -> Output {
    Command::new(cargo_lambda())
        .args([
            "lambda",
            "invoke",
            "_",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .args(["--data-ascii", data, "-o", "json"])
        .output()
        .expect("cargo-lambda runs")
}

/// cargo-lambda's Runtime API emulator on a free loopback port.
pub(crate) fn start_emulator() -> (u16, Killed) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let emulator = Killed(
        Command::new(cargo_lambda())
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--timeout",
                "900",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ])
            .current_dir(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); `make test` installs it",
                    cargo_lambda()
                )
            }),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "runtime API emulator did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (port, emulator)
}

/// The bootstrap binary under the emulator on `port`, with this environment.
pub(crate) fn start_function(port: u16, env: &[(&str, String)]) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn the_binary_serves_events_through_the_runtime_api() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (port, _emulator) = start_emulator();
    let _function = start_function(
        port,
        &[
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "x".into()),
            ("AWS_SECRET_ACCESS_KEY", "x".into()),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into()),
        ],
    );
    let building = std::fs::read_to_string(root.join("events/imagebuilder-building.json")).unwrap();
    let out = invoke(port, &building);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(response["ignored"].as_str().unwrap().contains("BUILDING"));

    // A bad event is an invocation error, and the function keeps serving.
    let bad = invoke(port, r#"{"hello": 1}"#);
    assert!(!bad.status.success());
    let bad_err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        bad_err.contains("unrecognised event: an object with keys [hello]"),
        "{bad_err}"
    );
    // Lambda's errorType names what went wrong, not a Rust type.
    assert!(
        bad_err.contains("ami-sweeper.UnrecognisedEvent"),
        "{bad_err}"
    );
    let again = invoke(port, &building);
    assert!(again.status.success());
}
