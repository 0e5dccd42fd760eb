//! The bootstrap binary under a real Lambda Runtime API (cargo-lambda's emulator,
//! offline on loopback): proves the runtime wiring, not just the handler. Also a Runtime
//! API of the tests' own ([`RuntimeApi`]) for tests that need each invocation's deadline.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// A Lambda Runtime API of the tests' own for one execution environment (one process of
/// the binary, started with [`start_function`] on [`RuntimeApi::port`]): each invocation
/// carries the deadline the test gives it in `Lambda-Runtime-Deadline-Ms`, as Lambda sends
/// its function's timeout. (cargo-lambda's emulator sends a fixed `600000`, which the
/// binary reads as no deadline.) Its threads end when it is dropped.
pub(crate) struct RuntimeApi {
    /// The loopback port it serves.
    pub(crate) port: u16,
    shared: Arc<(Mutex<Api>, Condvar)>,
}

/// What a [`RuntimeApi`] holds: invocations not yet taken, and the function's answers.
#[derive(Default)]
struct Api {
    /// (request id, event, deadline in ms since the epoch).
    pending: VecDeque<(String, String, u64)>,
    /// Request id → the response body, or the error body.
    answers: HashMap<String, Result<String, String>>,
    next_id: u64,
    closed: bool,
}

impl RuntimeApi {
    /// Serves on a free loopback port.
    pub(crate) fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new((Mutex::new(Api::default()), Condvar::new()));
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if accepting.0.lock().unwrap().closed {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let shared = accepting.clone();
                std::thread::spawn(move || serve_runtime(conn, &shared));
            }
        });
        RuntimeApi { port, shared }
    }

    /// Queues an invocation of `event` whose deadline is `timeout` from now; its id.
    pub(crate) fn invoke(&self, event: &serde_json::Value, timeout: Duration) -> String {
        let deadline = SystemTime::now() + timeout;
        let ms = deadline
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let (lock, changed) = &*self.shared;
        let mut api = lock.lock().unwrap();
        api.next_id += 1;
        let id = format!("invocation-{}", api.next_id);
        api.pending.push_back((id.clone(), event.to_string(), ms));
        changed.notify_all();
        id
    }

    /// The function's answer to invocation `id` (its response, or `Err` with its error),
    /// waiting at most `timeout`; `None` when none came.
    pub(crate) fn answer(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Option<Result<serde_json::Value, String>> {
        let (lock, changed) = &*self.shared;
        let (mut api, _) = changed
            .wait_timeout_while(lock.lock().unwrap(), timeout, |a| {
                !a.answers.contains_key(id)
            })
            .unwrap();
        let answer = api.answers.remove(id)?;
        Some(answer.map(|body| serde_json::from_str(&body).unwrap()))
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        let (lock, changed) = &*self.shared;
        lock.lock().unwrap().closed = true;
        changed.notify_all();
        // Wakes the accepting thread, which then sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Received messages of the hub's queue `queue` as the SQS event Lambda's event source
/// mapping delivers them.
pub(crate) fn sqs_batch(
    messages: &[aws_sdk_sqs::types::Message],
    queue: &str,
) -> serde_json::Value {
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "messageId": m.message_id().unwrap(),
                "receiptHandle": m.receipt_handle().unwrap(),
                "body": m.body().unwrap(),
                "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// One connection of the function to a [`RuntimeApi`]: `next` waits for an invocation
/// (until the API is dropped), `response` and `error` record the answer.
fn serve_runtime(conn: TcpStream, shared: &(Mutex<Api>, Condvar)) {
    let (lock, changed) = shared;
    let mut out = conn.try_clone().unwrap();
    let mut input = BufReader::new(conn);
    while let Some((method, path, body)) = read_request(&mut input) {
        let reply = if method == "GET" && path.ends_with("/runtime/invocation/next") {
            let api = changed
                .wait_while(lock.lock().unwrap(), |a| a.pending.is_empty() && !a.closed)
                .unwrap();
            let mut api = api;
            let Some((id, event, deadline)) = api.pending.pop_front() else {
                return;
            };
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Lambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:_\r\n\
                 Content-Length: {}\r\n\r\n{event}",
                event.len()
            )
        } else {
            let mut parts = path.rsplit('/');
            let (kind, id) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let answer = match kind {
                "response" => Ok(body),
                _ => Err(body),
            };
            let mut api = lock.lock().unwrap();
            api.answers.insert(id.to_string(), answer);
            changed.notify_all();
            "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}".to_string()
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// One HTTP/1.1 request: method, path and body (`Content-Length` or chunked); `None` at
/// the end of the connection.
fn read_request(input: &mut BufReader<TcpStream>) -> Option<(String, String, String)> {
    let mut line = String::new();
    input.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let (mut length, mut chunked) = (0, false);
    loop {
        let mut header = String::new();
        input.read_line(&mut header).ok().filter(|n| *n > 0)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            input.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            input.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        input.read_exact(&mut body).ok()?;
    }
    Some((method, path, String::from_utf8_lossy(&body).into_owned()))
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
