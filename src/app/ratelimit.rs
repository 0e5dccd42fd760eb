//! Pacing EC2 calls: EC2's token buckets in one table, and an adaptive pacer per
//! (account, Region, bucket), so a sweep stays under buckets that other callers (CI,
//! Terraform, Auto Scaling, the console) share with it.
//!
//! A pacer starts at its share of the documented bucket and never goes above it. When
//! EC2 answers `RequestLimitExceeded`, the bucket is emptier than assumed: the pacer cuts
//! its rate multiplicatively, empties its own bucket and retries the call after a
//! jittered delay; each success then raises the rate additively, back towards the share
//! (AIMD, as the SDKs' adaptive retry mode does with CUBIC). A throttled call is retried
//! until the run's stop (signal or deadline), never given up on by count: throttling is a
//! signal to slow down, not a failure of the image.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::app::stop::{Stop, StopReason};
use crate::error::AwsError;

/// One of EC2's token buckets per account and Region: `size` tokens, refilled at
/// `refill` per second. Figures from the EC2 developer guide, "Request throttling for the
/// Amazon EC2 API" (`ec2-api-throttling`), request token bucket sizes and refill rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The name reports and the front door (`scripts/throttle_proxy.py`) use.
    pub name: &'static str,
    /// Tokens the bucket holds.
    pub size: u32,
    /// Tokens added per second.
    pub refill: f64,
}

/// Non-mutating actions (`Describe*`): 100, refilled at 20/s.
pub const DESCRIBE: Bucket = Bucket {
    name: "describe",
    size: 100,
    refill: 20.0,
};
/// `DeregisterImage`: its own bucket of 100, refilled at 5/s.
pub const DEREGISTER_IMAGE: Bucket = Bucket {
    name: "deregister_image",
    size: 100,
    refill: 5.0,
};
/// `DeleteSnapshot`: its own bucket of 100, refilled at 5/s.
pub const DELETE_SNAPSHOT: Bucket = Bucket {
    name: "delete_snapshot",
    size: 100,
    refill: 5.0,
};
/// `CreateTags` and `DeleteTags`: their own bucket of 100, refilled at 10/s (the
/// write-ahead marks draw on it).
pub const TAGS: Bucket = Bucket {
    name: "tags",
    size: 100,
    refill: 10.0,
};
/// Every other mutating action (`DisableImage`, `EnableImage*`, ...): 50, refilled at 5/s.
pub const MUTATING: Bucket = Bucket {
    name: "mutating",
    size: 50,
    refill: 5.0,
};
/// The whole table, for the front door's check that it throttles by the same figures.
pub const BUCKETS: [Bucket; 5] = [DESCRIBE, DEREGISTER_IMAGE, DELETE_SNAPSHOT, TAGS, MUTATING];

/// CloudFormation's reads (`DescribeStacks`, `GetTemplate`): CloudFormation limits each
/// account and Region on its own, and publishes no per-action figure, so its pacer starts
/// conservative (10, then 2/s) and slows on `Throttling`.
pub const CLOUDFORMATION: Bucket = Bucket {
    name: "cloudformation",
    size: 10,
    refill: 2.0,
};
/// EMR's reads (`ListClusters`, `DescribeCluster`, group and fleet listings): its own
/// limits; a conservative start (10, then 2/s), slowing on `ThrottlingException`.
pub const EMR: Bucket = Bucket {
    name: "emr",
    size: 10,
    refill: 2.0,
};
/// S3 reads of reference objects (`ListObjectsV2`, `GetObject`): S3 allows thousands per
/// prefix, but these share the buckets with their owners' tools; a modest start (20, then
/// 10/s), slowing on `SlowDown`.
pub const S3_READS: Bucket = Bucket {
    name: "s3",
    size: 20,
    refill: 10.0,
};
/// The other services' buckets, one pacer each per (account, Region).
pub const SERVICE_BUCKETS: [Bucket; 3] = [CLOUDFORMATION, EMR, S3_READS];

/// The part of a bucket's size a pacer bursts through at share 1.0: a fifth is left to
/// the account's other callers. (The Describe pacer meters the inventory's listings too,
/// page by page, so it needs no smaller share than the others.)
const BURST_SHARE: f64 = 0.8;

/// A pacer's burst and refill per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Calls at once from a full bucket.
    pub burst: f64,
    /// Calls per second after the burst: the most the pacer ever allows itself.
    pub per_second: f64,
}

/// How hard the pacers may draw on EC2's buckets: the policy's `limits.api_share`, and
/// the operator's explicit rates, which override it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceConfig {
    /// `limits.api_share`: multiplies every pacer's burst and refill.
    pub api_share: f64,
    /// `--rate`: `DeregisterImage` (and `DeleteSnapshot`) calls per second; the tag and
    /// other mutating buckets in proportion to their documented refill.
    pub rate: Option<f64>,
    /// `--describe-rate`: launch-permission lookups (and reference checks) per second.
    pub describe_rate: Option<f64>,
}

impl Default for PaceConfig {
    /// The whole documented share, no explicit rate.
    fn default() -> Self {
        Self {
            api_share: 1.0,
            rate: None,
            describe_rate: None,
        }
    }
}

impl PaceConfig {
    /// With the policy's share (explicit rates still win).
    pub fn with_share(self, api_share: f64) -> Self {
        Self { api_share, ..self }
    }

    /// The pace of a pacer on `bucket`: its share of the documented bucket, or the
    /// operator's rate (with the burst unscaled) when one was given for it.
    pub fn pace(&self, bucket: Bucket) -> Pace {
        let (burst, refill) = (f64::from(bucket.size) * BURST_SHARE, bucket.refill);
        let explicit = if SERVICE_BUCKETS.contains(&bucket) {
            // The operator's rates are EC2's; other services keep their own start.
            None
        } else if bucket == DESCRIBE {
            self.describe_rate
        } else {
            self.rate
                .map(|r| r * bucket.refill / DEREGISTER_IMAGE.refill)
        };
        match explicit {
            Some(per_second) => Pace { burst, per_second },
            None => Pace {
                burst: (burst * self.api_share).max(1.0),
                per_second: refill * self.api_share,
            },
        }
    }
}

/// What one pacer did in a run: for the report and the metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PacerReport {
    /// Calls EC2 throttled (`RequestLimitExceeded`), each retried.
    pub throttles: u64,
    /// The rate it started at (its share): calls per second.
    pub share_per_second: f64,
    /// The rate it ended at: calls per second.
    pub end_per_second: f64,
}

/// The code of a call still throttled when the run stopped: the call was not made.
pub const THROTTLED: &str = "Throttled";
/// The code of a call the run's stop came before: it was not made.
pub const STOPPED: &str = "Stopped";

/// Multiplicative decrease on a throttle (CUBIC's, as in the SDKs' adaptive mode).
const DECREASE: f64 = 0.7;
/// Additive increase: the share of the ceiling regained per second without a throttle.
const INCREASE_PER_SECOND: f64 = 0.02;
/// The lowest rate, as a share of the ceiling.
const FLOOR: f64 = 1.0 / 64.0;
/// Attempts at a call that fails transiently (no code, `InternalError`, ...).
const TRANSIENT_ATTEMPTS: u32 = 4;
/// Retries of a throttled call that take the next token of its side ([`Lane::Retry`],
/// [`Lane::RetryAhead`]): enough for the pacer to come down to EC2's rate while it learns
/// it (each refusal cuts the rate), few enough that a call EC2 refuses without end soon
/// waits in its own lane.
const PRIORITY_RETRIES: u32 = 3;

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
    rate: f64,
    /// When the rate was last cut: a throttle of a call sent before it is old news.
    cut_at: Instant,
    /// When the rate last grew.
    grown_at: Instant,
    /// The lane of the last token taken in turn or ahead: while both lanes wait, the
    /// next is the other's.
    last_lane: Lane,
    rng: u64,
}

/// An adaptive token bucket for one (account, Region, EC2 bucket). See the module notes.
#[derive(Debug)]
pub struct Pacer {
    bucket: &'static str,
    burst: f64,
    ceiling: f64,
    /// The run's stop; a long-lived worker's pacers get each batch's (see [`Pacers`]).
    stop: Mutex<Stop>,
    state: Mutex<State>,
    /// Callers waiting for a token, in turn.
    gate: tokio::sync::Mutex<()>,
    /// Callers waiting ahead, in their own turn.
    ahead_gate: tokio::sync::Mutex<()>,
    throttles: AtomicU64,
    /// Throttled calls waiting to retry ([`Lane::Retry`]).
    retrying: AtomicU64,
    /// Throttled calls ahead waiting to retry ([`Lane::RetryAhead`]).
    retrying_ahead: AtomicU64,
    /// Callers waiting for a token in turn (the one at the front of `gate`).
    waiting_in_turn: AtomicU64,
    /// Callers waiting for a token ahead (the one at the front of `ahead_gate`).
    waiting_ahead: AtomicU64,
}

/// Where a caller waits for its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Behind the callers already waiting, first come, first served.
    InTurn,
    /// A line of its own beside the callers in turn, first come, first served: while
    /// both lines wait, the tokens the rate allows alternate between them.
    Ahead,
    /// A call throttled after its turn in turn: the next token of its side is its own (no
    /// caller in turn takes one while it waits; callers ahead still alternate with it).
    Retry,
    /// A call throttled after its turn ahead: the next token of the side ahead is its own.
    RetryAhead,
}

/// Counts a caller as waiting in its lane until it has its token (or is dropped).
struct Waiting<'p>(&'p AtomicU64);

impl<'p> Waiting<'p> {
    fn new(n: &'p AtomicU64) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Seeds each pacer's jitter differently, reproducibly.
static SEEDS: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

impl Pacer {
    /// A full pacer on `bucket` at `pace`, stopping its waits when `stop` fires.
    pub fn new(bucket: Bucket, pace: Pace, stop: Stop) -> Self {
        let burst = pace.burst.max(1.0);
        let ceiling = pace.per_second.max(f64::MIN_POSITIVE);
        let now = Instant::now();
        Self {
            bucket: bucket.name,
            burst,
            ceiling,
            stop: Mutex::new(stop),
            state: Mutex::new(State {
                tokens: burst,
                last: now,
                rate: ceiling,
                cut_at: now,
                grown_at: now,
                last_lane: Lane::InTurn,
                rng: SEEDS.fetch_add(0x6a09_e667_f3bc_c909, Ordering::Relaxed),
            }),
            gate: tokio::sync::Mutex::new(()),
            ahead_gate: tokio::sync::Mutex::new(()),
            throttles: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
            retrying_ahead: AtomicU64::new(0),
            waiting_in_turn: AtomicU64::new(0),
            waiting_ahead: AtomicU64::new(0),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &'static str {
        self.bucket
    }

    /// The rate it allows itself now, calls per second.
    pub fn rate(&self) -> f64 {
        self.state.lock().expect("pacer lock").rate
    }

    /// What it did so far.
    pub fn report(&self) -> PacerReport {
        PacerReport {
            throttles: self.throttles.load(Ordering::Relaxed),
            share_per_second: self.ceiling,
            end_per_second: self.rate(),
        }
    }

    /// Waits for a token and takes it; `Err` when the run stops first. Callers wait in
    /// turn (first come, first served), and the one at the front re-reads the rate after
    /// each wait, so a cut slows the very next call.
    pub async fn acquire(&self) -> Result<(), StopReason> {
        self.acquire_until(&self.own_stop(), Lane::InTurn).await
    }

    /// The stop the pacer was given (a long-lived worker's: its batch's).
    fn own_stop(&self) -> Stop {
        self.stop.lock().expect("pacer stop lock").clone()
    }

    /// [`Pacer::acquire`], its waits ended by `stop`; in the `lane`'s turn.
    async fn acquire_until(&self, stop: &Stop, lane: Lane) -> Result<(), StopReason> {
        // In turn: behind the gate, one caller at a time. Ahead: behind a gate of its own
        // beside it, so its front competes only with the front in turn (and the reads of
        // the round that came first are made first).
        let _turn = match lane {
            Lane::InTurn => Some(self.gate.lock().await),
            Lane::Ahead => Some(self.ahead_gate.lock().await),
            Lane::Retry | Lane::RetryAhead => None,
        };
        // A retry waiting for its token holds back the callers of its side (only while it
        // waits, and only for its first `PRIORITY_RETRIES` retries: one refused without end
        // takes at most its attempt and those retries running, then waits in its lane);
        // the two sides (in turn, ahead), both waiting, take the tokens in alternation, so
        // the lookups' retries never hold a round's reads back.
        let _waiting = Waiting::new(match lane {
            Lane::InTurn => &self.waiting_in_turn,
            Lane::Ahead => &self.waiting_ahead,
            Lane::Retry => &self.retrying,
            Lane::RetryAhead => &self.retrying_ahead,
        });
        loop {
            match self.take(lane) {
                None => return Ok(()),
                Some(wait) => Self::sleep(wait, stop).await?,
            }
        }
    }

    /// Takes a token if there is one (`None`), else says how long until there is.
    fn take(&self, lane: Lane) -> Option<Duration> {
        let mut s = self.state.lock().expect("pacer lock");
        let now = Instant::now();
        let dt = now.duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + dt * s.rate).min(self.burst);
        s.last = now;
        let load = |n: &AtomicU64| n.load(Ordering::SeqCst);
        // Each side (in turn, ahead): its retries first, then its callers; while both
        // sides wait, the tokens alternate between them.
        let (side, retries, others) = match lane {
            Lane::InTurn | Lane::Retry => (
                Lane::InTurn,
                load(&self.retrying),
                load(&self.waiting_ahead) + load(&self.retrying_ahead),
            ),
            Lane::Ahead | Lane::RetryAhead => (
                Lane::Ahead,
                load(&self.retrying_ahead),
                load(&self.waiting_in_turn) + load(&self.retrying),
            ),
        };
        if matches!(lane, Lane::InTurn | Lane::Ahead) && retries > 0 {
            // A retry of this side waits: the side's next token is its. Look again an
            // interval on.
            return Some(Duration::from_secs_f64(1.0 / s.rate).max(Duration::from_millis(1)));
        }
        if s.last_lane == side && others > 0 {
            // The other side waits and this one had the last token: the next is the
            // other's. Look again when there is one more.
            let wait = (2.0 - s.tokens).max(1.0) / s.rate;
            return Some(Duration::from_secs_f64(wait).max(Duration::from_millis(1)));
        }
        // (Within a rounding error of a whole token counts as one.)
        if s.tokens >= 1.0 - 1e-9 {
            s.tokens = (s.tokens - 1.0).max(0.0);
            s.last_lane = side;
            return None;
        }
        // The timer counts whole milliseconds: a shorter sleep would not move on.
        Some(Duration::from_secs_f64((1.0 - s.tokens) / s.rate).max(Duration::from_millis(1)))
    }

    /// Sleeps `wait`, unless `stop` fires first.
    async fn sleep(wait: Duration, stop: &Stop) -> Result<(), StopReason> {
        if wait.is_zero() {
            return Ok(());
        }
        if let Some(r) = stop.reason() {
            return Err(r);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = stop.wait() => Err(stop.reason().unwrap_or(StopReason::Signal)),
        }
    }

    /// Makes one call under the bucket: a throttled attempt cuts the rate and is retried
    /// after a jittered delay (the first [`PRIORITY_RETRIES`] retries on its side's next token),
    /// until the run stops; then the error's code is [`THROTTLED`] and the call was not made. A stop that came before the first attempt
    /// is the code [`STOPPED`], tokens or not: no call starts after a stop (a deletion
    /// whose facts' freshness ran out is not made). A transient failure is retried a few
    /// times.
    pub async fn call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        self.call_until(operation, &self.own_stop(), f).await
    }

    /// As [`Pacer::call`], ended by `until` instead of the pacer's own stop: a caller's
    /// own deadline (its facts' freshness), which callers sharing the pacer do not share.
    pub async fn call_until<T, F, Fut>(
        &self,
        operation: &'static str,
        until: &Stop,
        f: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        self.call_in(operation, until, Lane::InTurn, f).await
    }

    /// As [`Pacer::call`], ahead of the callers waiting in turn: in a line of its own
    /// beside theirs, first come, first served, and while both lines wait the tokens
    /// alternate between them (throttled, it waits again after its retry delay). For the
    /// reads a deletion waits on, which a sweep's launch-permission lookups, queued up to
    /// 16 images ahead of its deregistrations on the same bucket, would otherwise hold back
    /// for seconds. The pacer's rate binds it as it binds the others.
    pub async fn call_ahead<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        self.call_in(operation, &self.own_stop(), Lane::Ahead, f)
            .await
    }

    /// A call in `lane` ended by `until`: none made once it has fired.
    async fn call_in<T, F, Fut>(
        &self,
        operation: &'static str,
        until: &Stop,
        lane: Lane,
        f: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        if let Some(r) = until.reason() {
            return Err(stopped(operation, r, false));
        }
        self.attempts(operation, until, lane, true, f).await
    }

    /// [`Pacer::call`]'s attempts: `stop` ends a wait (for a token or a retry) and, when
    /// `only_before_stop`, any attempt its token came after: a caller can wait at the gate
    /// past its stop and then find a token at once (the rate grew meanwhile).
    async fn attempts<T, F, Fut>(
        &self,
        operation: &'static str,
        stop: &Stop,
        mut lane: Lane,
        only_before_stop: bool,
        mut f: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        let mut transient = 0;
        let mut throttled = false;
        let mut priority = PRIORITY_RETRIES;
        let own = lane;
        loop {
            if let Err(r) = self.acquire_until(stop, lane).await {
                return Err(stopped(operation, r, throttled));
            }
            if let Some(r) = stop.reason().filter(|_| only_before_stop) {
                return Err(stopped(operation, r, throttled));
            }
            let sent = Instant::now();
            match f().await {
                Ok(v) => {
                    self.grow();
                    return Ok(v);
                }
                Err(e) if is_throttle(&e) => {
                    let jitter = self.cut(sent);
                    if let Err(r) = Self::sleep(jitter, stop).await {
                        return Err(stopped(operation, r, true));
                    }
                    // It had its turn: its retries take its side's next token, before the
                    // callers that came since. Behind them, it came back as the call the pacer's
                    // next probe above EC2's rate was made with, throttled turn after turn
                    // (or, with a round's deletions queued, after its facts went stale);
                    // beside them, it lost the race for each token to the next in turn.
                    // Throttled [`PRIORITY_RETRIES`] times (or failing transiently), it waits
                    // in its own lane: a call EC2 refuses without end must not hold the
                    // others back.
                    lane = match (priority > 0, own) {
                        (false, _) => own,
                        (true, Lane::Ahead | Lane::RetryAhead) => Lane::RetryAhead,
                        (true, _) => Lane::Retry,
                    };
                    priority = priority.saturating_sub(1);
                    throttled = true;
                }
                Err(e) if is_transient(&e) && transient + 1 < TRANSIENT_ATTEMPTS => {
                    transient += 1;
                    // Only the retries right after a throttle go first.
                    lane = own;
                    priority = 0;
                    let backoff = Duration::from_millis(100 << transient);
                    // Stopped before the retry: the call was made and failed, and whether
                    // it took effect is unknown, so its own error stands, saying so
                    // ([`cut_short`] tells the caller the run stopped).
                    if let Err(r) = Self::sleep(backoff, stop).await {
                        let message =
                            format!("{}; not retried: {} stopped the run", e.message, why(r));
                        return Err(AwsError { message, ..e });
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A throttle of a call sent at `sent`: the first of a round cuts the rate and
    /// empties the pacer's bucket (EC2's is empty). Returns the jittered delay before
    /// the retry: up to one interval at the new rate.
    fn cut(&self, sent: Instant) -> Duration {
        self.throttles.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock().expect("pacer lock");
        let now = Instant::now();
        if sent >= s.cut_at {
            s.rate = (s.rate * DECREASE).max(self.ceiling * FLOOR);
            s.cut_at = now;
            s.grown_at = now;
        }
        s.tokens = s.tokens.min(0.0);
        s.last = now;
        s.rng = splitmix(s.rng);
        let unit = (s.rng >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(unit / s.rate)
    }

    /// A success: the rate regains [`INCREASE_PER_SECOND`] of the ceiling per second
    /// since it last grew, up to the ceiling.
    fn grow(&self) {
        let mut s = self.state.lock().expect("pacer lock");
        let now = Instant::now();
        let dt = now.duration_since(s.grown_at).as_secs_f64();
        s.rate = (s.rate + self.ceiling * INCREASE_PER_SECOND * dt).min(self.ceiling);
        s.grown_at = now;
    }
}

impl crate::ports::PageMeter for Pacer {
    fn page(
        &self,
        operation: &'static str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), AwsError>> + Send + '_>> {
        Box::pin(async move {
            self.acquire()
                .await
                .map_err(|r| stopped(operation, r, false))
        })
    }

    fn call<'a>(
        &'a self,
        operation: &'static str,
        mut attempt: crate::ports::MeteredAttempt<'a>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), AwsError>> + Send + 'a>> {
        // A listing is read as far as tokens allow after a stop, as its pages are: the
        // report still shows what the plan would have done.
        Box::pin(async move {
            let stop = self.own_stop();
            self.attempts(operation, &stop, Lane::InTurn, false, &mut attempt)
                .await
        })
    }
}

/// Where a pacer belongs: the account (`None`: the deployment's own), the Region and the
/// bucket's name.
type PacerKey = (Option<String>, String, &'static str);

/// The pacers of a long-lived worker (the queue Lambda, `cleanup --queue-url`): one per
/// (account, Region, bucket), kept from batch to batch so that what one batch learnt
/// about a bucket slows the next, while each batch brings its own stop (its deadline).
#[derive(Debug, Default)]
pub struct Pacers {
    map: Mutex<std::collections::HashMap<PacerKey, std::sync::Arc<Pacer>>>,
}

impl Pacers {
    /// The pacer on `bucket` in (`account`, `region`) at `pace`, stopping at `stop`. One
    /// made for a different pace (the policy's share changed) is replaced.
    pub fn get(
        &self,
        account: Option<&str>,
        region: &str,
        bucket: Bucket,
        pace: Pace,
        stop: &Stop,
    ) -> std::sync::Arc<Pacer> {
        let key = (account.map(str::to_string), region.to_string(), bucket.name);
        let mut map = self.map.lock().expect("pacers lock");
        let fresh = || std::sync::Arc::new(Pacer::new(bucket, pace, stop.clone()));
        let pacer = map.entry(key).or_insert_with(fresh);
        if pacer.burst != pace.burst.max(1.0)
            || pacer.ceiling != pace.per_second.max(f64::MIN_POSITIVE)
        {
            *pacer = fresh();
        }
        *pacer.stop.lock().expect("pacer stop lock") = stop.clone();
        pacer.clone()
    }

    /// What each pacer did so far, by (account, Region, bucket).
    pub fn reports(&self) -> Vec<(PacerKey, PacerReport)> {
        let map = self.map.lock().expect("pacers lock");
        let mut out: Vec<_> = map.iter().map(|(k, p)| (k.clone(), p.report())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Whether EC2 (or another AWS service) refused the call for its rate.
pub fn is_throttle(e: &AwsError) -> bool {
    [
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "SlowDown",
    ]
    .iter()
    .any(|c| e.is(c))
}

fn is_transient(e: &AwsError) -> bool {
    e.code.is_none()
        || [
            "InternalError",
            "InternalFailure",
            "ServiceUnavailable",
            "Unavailable",
        ]
        .iter()
        .any(|c| e.is(c))
}

/// The error of a call the run's stop ended: [`THROTTLED`] when EC2 had refused it.
/// What stopped the run, in words.
fn why(r: StopReason) -> &'static str {
    match r {
        StopReason::Signal => "a signal",
        StopReason::Deadline => "the run's deadline",
    }
}

/// Whether `e` ended a paced call because the run stopped: not made ([`STOPPED`]),
/// throttled until the stop ([`THROTTLED`]), or failed transiently with no retry left
/// before the stop (made, its effect unknown).
pub fn cut_short(e: &AwsError, stop: &Stop) -> bool {
    e.is(STOPPED) || e.is(THROTTLED) || (is_transient(e) && stop.reason().is_some())
}

fn stopped(operation: &'static str, r: StopReason, throttled: bool) -> AwsError {
    let why = why(r);
    if throttled {
        AwsError::new(
            operation,
            THROTTLED,
            format!(
                "throttled by EC2 until {why} stopped the run; not done, left for the next run"
            ),
        )
    } else {
        AwsError::new(
            operation,
            STOPPED,
            format!("{why} stopped the run before this call"),
        )
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// EC2's side: a bucket of `size` refilled at `refill`/s, full at first; a refused
    /// call takes no token. Records each accepted call's instant.
    struct Ec2Bucket {
        state: Mutex<(f64, Instant, Vec<Instant>, u64)>,
        size: f64,
        refill: f64,
    }

    impl Ec2Bucket {
        fn new(size: u32, refill: f64) -> Arc<Self> {
            Arc::new(Self {
                state: Mutex::new((f64::from(size), Instant::now(), Vec::new(), 0)),
                size: f64::from(size),
                refill,
            })
        }

        /// One call with a round trip of 60 ms.
        async fn call(&self) -> Result<(), AwsError> {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let ok = {
                let mut s = self.state.lock().unwrap();
                let now = Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.refill).min(self.size);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    s.2.push(now);
                    true
                } else {
                    s.3 += 1;
                    false
                }
            };
            tokio::time::sleep(Duration::from_millis(30)).await;
            if ok {
                Ok(())
            } else {
                Err(AwsError::new(
                    "DeregisterImage",
                    "RequestLimitExceeded",
                    "Request limit exceeded.",
                ))
            }
        }

        fn accepted(&self) -> Vec<Instant> {
            self.state.lock().unwrap().2.clone()
        }
    }

    /// `n` calls, 8 in flight, through `pacer` to `ec2`; each call's result.
    async fn run(pacer: &Pacer, ec2: &Arc<Ec2Bucket>, n: usize) -> Vec<Result<(), AwsError>> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(0..n)
            .map(|_| pacer.call("DeregisterImage", || ec2.call()))
            .buffer_unordered(8)
            .collect()
            .await
    }

    fn share() -> Pace {
        PaceConfig::default().pace(DEREGISTER_IMAGE)
    }

    /// One call at once, then `per_second`: a pacer whose every token is a turn.
    pub(super) fn one_at_a_time(per_second: f64) -> Pace {
        Pace {
            burst: 1.0,
            per_second,
        }
    }

    #[test]
    fn the_table_is_ec2s_and_the_share_leaves_a_fifth() {
        assert_eq!((DEREGISTER_IMAGE.size, DEREGISTER_IMAGE.refill), (100, 5.0));
        assert_eq!((DELETE_SNAPSHOT.size, DELETE_SNAPSHOT.refill), (100, 5.0));
        assert_eq!((TAGS.size, TAGS.refill), (100, 10.0));
        assert_eq!((MUTATING.size, MUTATING.refill), (50, 5.0));
        assert_eq!((DESCRIBE.size, DESCRIBE.refill), (100, 20.0));
        let full = PaceConfig::default();
        assert_eq!(
            full.pace(DEREGISTER_IMAGE),
            Pace {
                burst: 80.0,
                per_second: 5.0
            }
        );
        assert_eq!(
            full.pace(TAGS),
            Pace {
                burst: 80.0,
                per_second: 10.0
            }
        );
        assert_eq!(
            full.pace(MUTATING),
            Pace {
                burst: 40.0,
                per_second: 5.0
            }
        );
        assert_eq!(
            full.pace(DESCRIBE),
            Pace {
                burst: 80.0,
                per_second: 20.0
            }
        );
        let told = full.with_share(0.2);
        assert_eq!(
            told.pace(DEREGISTER_IMAGE),
            Pace {
                burst: 16.0,
                per_second: 1.0
            }
        );
        assert_eq!(
            told.pace(TAGS),
            Pace {
                burst: 16.0,
                per_second: 2.0
            }
        );
        // The operator's rate wins over the share; the other mutating buckets follow it.
        let flags = PaceConfig {
            rate: Some(50.0),
            describe_rate: Some(150.0),
            ..told
        };
        assert_eq!(
            flags.pace(DEREGISTER_IMAGE),
            Pace {
                burst: 80.0,
                per_second: 50.0
            }
        );
        assert_eq!(
            flags.pace(TAGS),
            Pace {
                burst: 80.0,
                per_second: 100.0
            }
        );
        assert_eq!(
            flags.pace(DESCRIBE),
            Pace {
                burst: 80.0,
                per_second: 150.0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_rate() {
        let p = Pacer::new(
            DEREGISTER_IMAGE,
            Pace {
                burst: 3.0,
                per_second: 2.0,
            },
            Stop::default(),
        );
        let start = Instant::now();
        for _ in 0..3 {
            p.acquire().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..4 {
            p.acquire().await.unwrap();
        }
        // Four more tokens at 2/s: two seconds of (virtual) waiting.
        let waited = start.elapsed().as_secs_f64();
        assert!((waited - 2.0).abs() < 0.01, "waited {waited}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_ahead_takes_the_next_token_before_the_callers_waiting_in_turn() {
        let p = Arc::new(Pacer::new(DESCRIBE, one_at_a_time(1.0), Stop::default()));
        p.acquire().await.unwrap();
        let start = Instant::now();
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    p.acquire().await.unwrap();
                    Instant::now()
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let ahead = p.call_ahead("DescribeSnapshots", || async {
            Ok::<_, AwsError>(Instant::now())
        });
        let took = ahead.await.unwrap().duration_since(start).as_secs_f64();
        assert!(
            took <= 2.0 + 0.01,
            "ahead of five in turn, it waited {took} s"
        );
        let mut ends = Vec::new();
        for w in waiting {
            ends.push(w.await.unwrap().duration_since(start).as_secs_f64());
        }
        ends.sort_by(f64::total_cmp);
        // The rate binds the call ahead too: six calls at 1/s after the burst.
        assert!(ends[4] >= 6.0 - 1e-6, "the last in turn at {}", ends[4]);
    }

    /// Through a pacer of one token a second (its first token already taken): callers in
    /// turn arriving at each of `in_turn`'s instants (a sweep's lookups, each coming as
    /// the one before is done) and rounds of four reads ahead arriving at each of
    /// `rounds`' (the reads a deletion waits on); who took each token, in order: the lane,
    /// and the round (1, 2, ...; 0 in turn).
    async fn lanes_taking_tokens(in_turn: &[f64], rounds: &[f64]) -> Vec<(Lane, usize)> {
        let p = Arc::new(Pacer::new(DESCRIBE, one_at_a_time(1.0), Stop::default()));
        p.acquire().await.unwrap();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let at = |secs: f64| tokio::time::sleep(Duration::from_secs_f64(secs));
        let mut tasks = Vec::new();
        for &secs in in_turn {
            let (p, taken, arrive) = (p.clone(), taken.clone(), at(secs));
            tasks.push(tokio::spawn(async move {
                arrive.await;
                p.acquire().await.unwrap();
                taken.lock().unwrap().push((Lane::InTurn, 0));
            }));
        }
        for (round, &secs) in (1..).zip(rounds) {
            for _ in 0..4 {
                let (p, taken, arrive) = (p.clone(), taken.clone(), at(secs));
                tasks.push(tokio::spawn(async move {
                    arrive.await;
                    let read = || {
                        taken.lock().unwrap().push((Lane::Ahead, round));
                        async { Ok::<_, AwsError>(()) }
                    };
                    p.call_ahead("DescribeImages", read).await.unwrap();
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let taken = taken.lock().unwrap().clone();
        taken
    }

    /// While both lanes wait, no lane takes two tokens running: a round's reads waiting
    /// beside lookups that each come as a token does would otherwise lose every token to
    /// them (the round verified seconds late, its pair's `DeleteSnapshot` bucket idle
    /// meanwhile).
    #[tokio::test(start_paused = true)]
    async fn while_both_lanes_wait_the_tokens_alternate() {
        let lookups: Vec<f64> = (1..=8).map(f64::from).collect();
        let taken = lanes_taking_tokens(&lookups, &[0.5]).await;
        let last_read = taken.iter().rposition(|(l, _)| *l == Lane::Ahead).unwrap();
        let lanes: Vec<Lane> = taken[..=last_read].iter().map(|(l, _)| *l).collect();
        assert!(
            lanes.windows(2).all(|w| w[0] != w[1]),
            "tokens by lane while both waited: {lanes:?}"
        );
        assert!(
            last_read < 8,
            "the round's last read took token {}",
            last_read + 1
        );
    }

    /// A round's reads are not held back behind every throttled lookup: the retries of
    /// calls in turn go before the callers in turn (their side's next token is theirs) but
    /// alternate with the reads ahead, as the callers in turn do. Behind a run's first
    /// burst of lookups, refused in a bucket its inventory had emptied, the first round's
    /// reads waited for every retry, and the pair's `DeleteSnapshot` bucket idled 2 s more
    /// (`make bench-org`, 6 pairs: 46.7 s, 44.4 s without).
    #[tokio::test(start_paused = true)]
    async fn retries_in_turn_alternate_with_the_reads_ahead() {
        let p = Arc::new(Pacer::new(DESCRIBE, one_at_a_time(1.0), Stop::default()));
        p.acquire().await.unwrap();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (lane, n) in [(Lane::Retry, 6), (Lane::Ahead, 4), (Lane::InTurn, 2)] {
            for _ in 0..n {
                let (p, taken) = (p.clone(), taken.clone());
                tasks.push(tokio::spawn(async move {
                    p.acquire_until(&Stop::default(), lane).await.unwrap();
                    taken.lock().unwrap().push(lane);
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let taken = taken.lock().unwrap().clone();
        let last_read = taken.iter().rposition(|l| *l == Lane::Ahead).unwrap();
        assert!(
            last_read < 8,
            "the round's last read took token {}: {taken:?}",
            last_read + 1
        );
        let first_in_turn = taken.iter().position(|l| *l == Lane::InTurn).unwrap();
        let last_retry = taken.iter().rposition(|l| *l == Lane::Retry).unwrap();
        assert!(
            first_in_turn > last_retry,
            "a caller in turn went before a retry of its side: {taken:?}"
        );
    }

    /// A read ahead that stops waiting (its future dropped mid-wait, or its stop fired)
    /// leaves no claim on the tokens: the callers in turn then take every token, none
    /// yielded to a lane nobody waits in.
    #[tokio::test(start_paused = true)]
    async fn a_read_ahead_gone_mid_wait_leaves_every_token_to_the_callers_in_turn() {
        for dropped in [true, false] {
            let p = Arc::new(Pacer::new(DESCRIBE, one_at_a_time(1.0), Stop::default()));
            p.acquire().await.unwrap();
            let stop = Stop::default();
            // The last token went in turn: while one waits ahead, the next is its.
            p.state.lock().unwrap().last_lane = Lane::InTurn;
            let (q, s) = (p.clone(), stop.clone());
            let ahead = tokio::spawn(async move { q.acquire_until(&s, Lane::Ahead).await });
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(p.waiting_ahead.load(Ordering::SeqCst), 1);
            if dropped {
                ahead.abort();
                assert!(ahead.await.unwrap_err().is_cancelled());
            } else {
                stop.request();
                assert!(ahead.await.unwrap().is_err());
            }
            assert_eq!(p.waiting_ahead.load(Ordering::SeqCst), 0);
            let start = Instant::now();
            for _ in 0..4 {
                p.acquire().await.unwrap();
            }
            let took = start.elapsed().as_secs_f64();
            assert!(
                took <= 4.0 + 1e-3,
                "dropped {dropped}: four tokens took {took} s"
            );
        }
    }

    /// Reads ahead are made first come, first served: the round that came first is
    /// verified first, though a later one comes just as a token does (two rounds' reads
    /// racing for each token would verify both late).
    #[tokio::test(start_paused = true)]
    async fn the_round_that_came_first_reads_first() {
        let taken = lanes_taking_tokens(&[], &[0.5, 2.0]).await;
        let rounds: Vec<usize> = taken.iter().map(|(_, r)| *r).collect();
        assert_eq!(rounds, [1, 1, 1, 1, 2, 2, 2, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn never_above_the_share_when_nothing_throttles() {
        // EC2's real bucket (100, 5/s) and the pacer at its share (80, 5/s).
        let ec2 = Ec2Bucket::new(100, 5.0);
        let p = Pacer::new(DEREGISTER_IMAGE, share(), Stop::default());
        let start = Instant::now();
        let results = run(&p, &ec2, 300).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(p.report().throttles, 0);
        assert_eq!(p.rate(), 5.0, "it ends at its share");
        // In every window from the start, at most the burst plus the refill since.
        let accepted = ec2.accepted();
        for (i, t) in accepted.iter().enumerate() {
            let allowed = 80.0 + t.duration_since(start).as_secs_f64() * 5.0 + 1e-6;
            assert!((i + 1) as f64 <= allowed, "call {i} at {:?}", *t - start);
        }
        let took = accepted.last().unwrap().duration_since(start).as_secs_f64();
        assert!(took >= (300.0 - 80.0 - 1.0) / 5.0, "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn under_a_bucket_half_the_assumed_size_every_call_succeeds_near_its_refill() {
        // Other callers hold half of every bucket: 50 tokens refilled at 2.5/s.
        let ec2 = Ec2Bucket::new(50, 2.5);
        let p = Pacer::new(DEREGISTER_IMAGE, share(), Stop::default());
        let results = run(&p, &ec2, 300).await;
        assert!(results.iter().all(Result::is_ok), "nothing fails");
        let accepted = ec2.accepted();
        assert_eq!(accepted.len(), 300);
        // After the bucket's own burst, the calls EC2 accepted came at its refill.
        let (first, last) = (accepted[50], accepted[299]);
        let rate = 249.0 / last.duration_since(first).as_secs_f64();
        assert!((rate - 2.5).abs() <= 0.5, "settled at {rate}/s");
        let end = p.rate();
        assert!((end - 2.5).abs() <= 0.5, "ended at {end}/s");
        let throttles = p.report().throttles;
        assert!(throttles > 0 && throttles < 100, "{throttles} throttles");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_backoff_ends_the_call_undone() {
        // A bucket another caller keeps empty: every call is throttled.
        let ec2 = Ec2Bucket::new(0, 0.0);
        let stop = Stop::with_deadline(Some(Instant::now() + Duration::from_secs(30)));
        let p = Pacer::new(DEREGISTER_IMAGE, share(), stop.clone());
        let err = p.call("DeregisterImage", || ec2.call()).await.unwrap_err();
        assert!(err.is(THROTTLED), "{err}");
        assert!(err.message.contains("deadline"), "{err}");
        assert_eq!(stop.reason(), Some(StopReason::Deadline));
        assert!(ec2.accepted().is_empty());
        assert!(p.report().throttles > 5, "retried until the deadline");
        // A call that must wait for a token when a signal comes is not made at all.
        let signal = Stop::default();
        let slow = Pacer::new(DEREGISTER_IMAGE, one_at_a_time(0.1), signal.clone());
        slow.acquire().await.unwrap();
        signal.request();
        let err = slow
            .call("DeregisterImage", || ec2.call())
            .await
            .unwrap_err();
        assert!(err.is(STOPPED), "{err}");
        assert_eq!(slow.report().throttles, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_workers_pacer_outlives_its_batch_and_stops_at_each_batchs_stop() {
        let pacers = Pacers::default();
        let pace = share();
        // Batch one: its deadline passes while EC2 keeps refusing; the rate was cut.
        let first = Stop::with_deadline(Some(Instant::now() + Duration::from_secs(5)));
        let p = pacers.get(Some("111"), "eu-west-1", DEREGISTER_IMAGE, pace, &first);
        let refusing = Ec2Bucket::new(0, 0.0);
        let err = p
            .call("DeleteSnapshot", || refusing.call())
            .await
            .unwrap_err();
        assert!(err.is(THROTTLED), "{err}");
        let cut = p.rate();
        assert!(cut < pace.per_second, "cut to {cut}");
        // Batch two gets the same pacer (what batch one learnt), under its own stop.
        let second = Stop::default();
        let q = pacers.get(Some("111"), "eu-west-1", DEREGISTER_IMAGE, pace, &second);
        assert!(Arc::ptr_eq(&p, &q));
        assert!(q.rate() < pace.per_second);
        let ok = Ec2Bucket::new(10, 5.0);
        q.call("DeleteSnapshot", || ok.call()).await.unwrap();
        // Another account, Region or bucket has its own; a new share makes a new pacer.
        let other = pacers.get(Some("222"), "eu-west-1", DEREGISTER_IMAGE, pace, &second);
        assert!(!Arc::ptr_eq(&p, &other));
        let half = Pace {
            burst: pace.burst / 2.0,
            per_second: pace.per_second / 2.0,
        };
        let shared = pacers.get(Some("111"), "eu-west-1", DEREGISTER_IMAGE, half, &second);
        assert!(!Arc::ptr_eq(&p, &shared));
        assert_eq!(shared.rate(), half.per_second);
        assert_eq!(pacers.reports().len(), 2);
    }

    #[test]
    fn other_services_start_conservative_and_keep_their_pace_under_ec2_rates() {
        let flags = PaceConfig {
            rate: Some(50.0),
            describe_rate: Some(100.0),
            ..PaceConfig::default()
        };
        for b in SERVICE_BUCKETS {
            // The operator's rates are EC2's: a service's pacer keeps its own start.
            assert_eq!(flags.pace(b), PaceConfig::default().pace(b), "{}", b.name);
            assert!(
                b.refill <= DESCRIBE.refill && b.size <= DESCRIBE.size,
                "{}",
                b.name
            );
        }
        let proxy = include_str!("../../scripts/throttle_proxy.py");
        // The front door throttles CloudFormation and EMR by the same figures (by the
        // signing scope's service name), and answers S3's SlowDown by fault only.
        for (b, service) in [
            (CLOUDFORMATION, "cloudformation"),
            (EMR, "elasticmapreduce"),
        ] {
            let line = format!("\"{service}\": ({}, {:.1}),", b.size, b.refill);
            assert!(
                proxy.contains(&line),
                "scripts/throttle_proxy.py lacks {line}"
            );
        }
    }

    #[test]
    fn the_front_door_throttles_by_the_same_table() {
        let proxy = include_str!("../../scripts/throttle_proxy.py");
        for b in BUCKETS {
            let line = format!("\"{}\": ({}, {:.1}),", b.name, b.size, b.refill);
            assert!(
                proxy.contains(&line),
                "scripts/throttle_proxy.py lacks {line}"
            );
        }
    }
    /// Review of the round's deletions made at once: they wait at the gate together, and a
    /// deletion whose facts went stale while it waited there must not be made. Here the
    /// pacer is throttled down to its floor, the caller at the front waits 12.8 s for its
    /// token, and a deletion sent before the throttles answers meanwhile (the rate grows):
    /// the tokens the front finds on waking must not carry a stale deletion behind it.
    #[tokio::test(start_paused = true)]
    async fn a_call_whose_stop_fired_while_it_waited_in_turn_is_not_made() {
        use std::sync::atomic::AtomicBool;
        let p = Arc::new(Pacer::new(DELETE_SNAPSHOT, share(), Stop::default()));
        let start = Instant::now();
        // A deletion sent at once, answered (successfully) 10 s later.
        let slow = tokio::spawn({
            let p = p.clone();
            async move {
                p.call("DeleteSnapshot", || async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok::<_, AwsError>(())
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        // The round's other deletions were throttled: the rate is cut to its floor.
        for _ in 0..20 {
            p.cut(Instant::now());
        }
        // The front of the line waits for its token...
        let front = tokio::spawn({
            let p = p.clone();
            async move { p.acquire().await }
        });
        tokio::task::yield_now().await;
        // ...and behind it, a deletion whose facts are fresh for 5 s more.
        let fresh = Stop::with_deadline(Some(start + Duration::from_secs(5)));
        let made = Arc::new(AtomicBool::new(false));
        let behind = {
            let made = made.clone();
            p.call_until("DeleteSnapshot", &fresh, move || {
                let made = made.clone();
                async move {
                    made.store(true, Ordering::SeqCst);
                    Ok::<_, AwsError>(Instant::now())
                }
            })
        };
        let behind = behind.await;
        slow.await.unwrap().unwrap();
        front.await.unwrap().unwrap();
        assert!(
            !made.load(Ordering::SeqCst),
            "a deletion was made {:?} after the start, its facts stale since 5 s: {behind:?}",
            behind.as_ref().map(|t| t.duration_since(start)).ok()
        );
        assert!(behind.unwrap_err().is(STOPPED));
    }
    /// Review of `call_ahead`: callers ahead of the line and callers in turn together, every
    /// one of them made (none starved), and never above the share: the lane changes the
    /// order, not the rate.
    #[tokio::test(start_paused = true)]
    async fn calls_ahead_beside_calls_in_turn_never_exceed_the_share() {
        use futures_util::stream::{self, StreamExt};
        let ec2 = Ec2Bucket::new(100, 5.0);
        let p = Pacer::new(DEREGISTER_IMAGE, share(), Stop::default());
        let start = Instant::now();
        let results: Vec<Result<(), AwsError>> = stream::iter(0..300)
            .map(|i| {
                let (p, ec2) = (&p, &ec2);
                async move {
                    match i % 3 {
                        0 => p.call_ahead("DescribeImages", || ec2.call()).await,
                        _ => p.call("DescribeImages", || ec2.call()).await,
                    }
                }
            })
            .buffer_unordered(12)
            .collect()
            .await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(p.report().throttles, 0);
        let accepted = ec2.accepted();
        assert_eq!(accepted.len(), 300);
        for (i, t) in accepted.iter().enumerate() {
            let allowed = 80.0 + t.duration_since(start).as_secs_f64() * 5.0 + 1e-6;
            assert!((i + 1) as f64 <= allowed, "call {i} at {:?}", *t - start);
        }
    }
    /// Review of `call_ahead`: a throttled call ahead still cuts the rate and is retried
    /// (every call made, none failed), so reads ahead of the line slow down as the others do.
    #[tokio::test(start_paused = true)]
    async fn calls_ahead_under_a_smaller_bucket_cut_the_rate_and_retry() {
        use futures_util::stream::{self, StreamExt};
        // Other callers hold most of the bucket: 20 tokens refilled at 2/s.
        let ec2 = Ec2Bucket::new(20, 2.0);
        let p = Pacer::new(DEREGISTER_IMAGE, share(), Stop::default());
        let results: Vec<Result<(), AwsError>> = stream::iter(0..120)
            .map(|_| p.call_ahead("DescribeImages", || ec2.call()))
            .buffer_unordered(8)
            .collect()
            .await;
        assert!(results.iter().all(Result::is_ok), "nothing fails");
        assert_eq!(ec2.accepted().len(), 120);
        let throttles = p.report().throttles;
        assert!(throttles > 0, "the bucket refused some");
        assert!(p.rate() < 5.0, "the rate was cut: {}", p.rate());
        let accepted = ec2.accepted();
        let rate = 99.0 / accepted[119].duration_since(accepted[20]).as_secs_f64();
        assert!((rate - 2.0).abs() <= 0.5, "settled at {rate}/s");
    }
    /// Review of `call_ahead`: a read ahead is never made after the pacer's stop (the
    /// batch's): not when the stop came first, not when it comes while the read waits for a
    /// token beside the line.
    #[tokio::test(start_paused = true)]
    async fn no_call_ahead_is_made_after_the_stop() {
        let stop = Stop::default();
        let slow = one_at_a_time(0.1);
        let p = Pacer::new(DESCRIBE, slow, stop.clone());
        p.acquire().await.unwrap();
        let made = std::sync::atomic::AtomicU32::new(0);
        let read = || async {
            made.fetch_add(1, Ordering::SeqCst);
            Ok::<_, AwsError>(())
        };
        let waiting = p.call_ahead("DescribeImages", read);
        let signal = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.request();
        };
        let (waited, ()) = tokio::join!(waiting, signal);
        assert!(waited.unwrap_err().is(STOPPED));
        tokio::time::sleep(Duration::from_secs(20)).await;
        let after = p.call_ahead("DescribeImages", read).await;
        assert!(after.unwrap_err().is(STOPPED));
        assert_eq!(made.load(Ordering::SeqCst), 0);
    }

    /// Five calls queued in `lane` on `p` 10 ms on (while `first` is out): `first`'s
    /// answer and the instants the five were made, in order.
    pub(super) async fn first_and_five_in(
        p: &Arc<Pacer>,
        lane: Lane,
        first: tokio::task::JoinHandle<Instant>,
    ) -> (Instant, Vec<Instant>) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let behind: Vec<_> = (0..5)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    let f = || async { Ok::<_, AwsError>(Instant::now()) };
                    p.call_in("Call", &Stop::default(), lane, f).await.unwrap()
                })
            })
            .collect();
        let made = first.await.unwrap();
        let mut after = Vec::new();
        for b in behind {
            after.push(b.await.unwrap());
        }
        after.sort();
        (made, after)
    }

    /// A call throttled after its turn takes the next token for its retry, before the
    /// callers that queued since: behind them, a deletion came back as the call
    /// the pacer's next probe above EC2's rate was made with, turn after turn, until its
    /// facts went stale (found in `make bench-fanout`: one pair's last deletion 15 s late).
    #[tokio::test(start_paused = true)]
    async fn a_throttled_call_is_retried_before_the_callers_that_queued_behind_it() {
        throttled_then_made_before_the_five_behind(1, Lane::InTurn).await;
    }

    /// So are its next retries while the pacer learns EC2's rate (up to
    /// [`PRIORITY_RETRIES`] refusals): sent to the back of the line at its second refusal,
    /// a deletion waited behind a round's thirty others at a bucket of one a second, and its
    /// facts went stale before its turn (`make bench-fanout`: the pair's last deletion 17 s
    /// late).
    #[tokio::test(start_paused = true)]
    async fn a_call_throttled_while_the_pacer_learns_keeps_its_place() {
        throttled_then_made_before_the_five_behind(PRIORITY_RETRIES, Lane::InTurn).await;
    }

    /// A call in `lane` (in turn at the `DeleteSnapshot` bucket, or ahead at the Describe
    /// bucket) refused `refusals` times, then made, while five queue behind it in the same
    /// lane: made before the second of them. The pacer, for what else the caller checks.
    pub(super) async fn throttled_then_made_before_the_five_behind(
        refusals: u32,
        lane: Lane,
    ) -> Arc<Pacer> {
        let bucket = if lane == Lane::Ahead {
            DESCRIBE
        } else {
            DELETE_SNAPSHOT
        };
        let p = Arc::new(Pacer::new(bucket, one_at_a_time(1.0), Stop::default()));
        let start = Instant::now();
        let first = Arc::new(AtomicU64::new(0));
        let throttled_once = {
            let (p, first) = (p.clone(), first.clone());
            tokio::spawn(async move {
                let f = || {
                    let n = first.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        if n < u64::from(refusals) {
                            Err(AwsError::new("Call", "RequestLimitExceeded", "x"))
                        } else {
                            Ok(Instant::now())
                        }
                    }
                };
                p.call_in("Call", &Stop::default(), lane, f).await.unwrap()
            })
        };
        // Five more queue in the same lane while the first is out.
        let five = first_and_five_in(&p, lane, throttled_once);
        let (retried, after) = tokio::time::timeout(Duration::from_secs(3600), five)
            .await
            .expect("stalled");
        let made = first.load(Ordering::SeqCst);
        assert_eq!(made, u64::from(refusals) + 1, "throttled, then made");
        let at = |t: Instant| t.duration_since(start).as_secs_f64();
        assert!(
            retried <= after[1],
            "the retry at {} s came after {} of the five behind it (second at {} s)",
            at(retried),
            after.iter().filter(|t| **t < retried).count(),
            at(after[1])
        );
        p
    }

    /// A call EC2 throttles without end gets priority for its first retries only: the calls
    /// beside it are all made, and it ends throttled at the stop.
    #[tokio::test(start_paused = true)]
    async fn a_call_throttled_without_end_does_not_hold_the_others_back() {
        let stop = Stop::with_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(60)));
        let p = Arc::new(Pacer::new(DELETE_SNAPSHOT, one_at_a_time(1.0), stop));
        let refused = {
            let p = p.clone();
            tokio::spawn(async move {
                let f = || async {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    Err::<(), _>(AwsError::new("DeleteSnapshot", "RequestLimitExceeded", "x"))
                };
                p.call("DeleteSnapshot", f).await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let others: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    let f = || async { Ok::<_, AwsError>(()) };
                    p.call("DeleteSnapshot", f).await
                })
            })
            .collect();
        for o in others {
            assert!(o.await.unwrap().is_ok(), "a call beside it was not made");
        }
        assert!(refused.await.unwrap().unwrap_err().is(THROTTLED));
    }
}

#[cfg(test)]
mod retry_lane_review {
    //! Review of the retry lane (a throttled call's retries, its first
    //! [`PRIORITY_RETRIES`], take the next token):
    //! its count of waiting retries must never outlive the wait, no retry may be made after
    //! its stop, and the lanes together must neither stall nor go above the share.
    use super::tests::one_at_a_time;
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    /// A call refused (throttled) at its first attempt, made at the next; counts attempts.
    fn throttled_once(
        attempts: &Arc<AtomicU32>,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), AwsError>> + Send>> {
        let attempts = attempts.clone();
        move || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(60)).await;
                if n == 0 {
                    Err(AwsError::new("DeleteSnapshot", "RequestLimitExceeded", "x"))
                } else {
                    Ok(())
                }
            })
        }
    }

    /// Waits (virtual time) until a retry is counted as waiting in the pacer's retry lane.
    async fn until_a_retry_waits(p: &Pacer) {
        for _ in 0..10_000 {
            if p.retrying.load(Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("no retry ever waited in the retry lane");
    }

    /// A retry dropped while it waits for its token (its task aborted, its caller's
    /// future dropped by a `select!` or a timeout) stops holding the other callers back.
    #[tokio::test(start_paused = true)]
    async fn a_retry_dropped_while_it_waits_holds_no_one_back() {
        let p = Arc::new(Pacer::new(
            DELETE_SNAPSHOT,
            one_at_a_time(1.0),
            Stop::default(),
        ));
        let attempts = Arc::new(AtomicU32::new(0));
        let retry = tokio::spawn({
            let (p, f) = (p.clone(), throttled_once(&attempts));
            async move { p.call("DeleteSnapshot", f).await }
        });
        until_a_retry_waits(&p).await;
        retry.abort();
        assert!(retry.await.unwrap_err().is_cancelled());
        assert_eq!(p.retrying.load(Ordering::SeqCst), 0, "the count leaked");
        let start = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(30), p.acquire()).await;
        assert!(
            got.is_ok(),
            "a caller in turn stalled behind a dropped retry"
        );
        assert!(
            start.elapsed() <= Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "the dropped retry was made"
        );
    }

    /// A retry whose own stop (its facts' freshness) fires while it waits for its token is
    /// not made, ends throttled, and the callers behind it go on.
    #[tokio::test(start_paused = true)]
    async fn a_retry_whose_freshness_ends_while_it_waits_is_not_made_and_frees_the_rest() {
        let p = Arc::new(Pacer::new(
            DELETE_SNAPSHOT,
            one_at_a_time(0.2),
            Stop::default(),
        ));
        let fresh = Stop::default();
        let attempts = Arc::new(AtomicU32::new(0));
        let retry = tokio::spawn({
            let (p, f, fresh) = (p.clone(), throttled_once(&attempts), fresh.clone());
            async move { p.call_until("DeleteSnapshot", &fresh, f).await }
        });
        until_a_retry_waits(&p).await;
        // Another deletion queues in turn behind the waiting retry; then the retry's facts
        // go stale.
        let made = Arc::new(AtomicU32::new(0));
        let behind = tokio::spawn({
            let (p, made) = (p.clone(), made.clone());
            async move {
                p.call("DeleteSnapshot", move || {
                    made.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, AwsError>(()) }
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        fresh.request();
        let err = retry.await.unwrap().unwrap_err();
        assert!(err.is(THROTTLED), "{err}");
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "made after its stop");
        assert_eq!(p.retrying.load(Ordering::SeqCst), 0, "the count leaked");
        let behind = tokio::time::timeout(Duration::from_secs(60), behind).await;
        assert!(behind.expect("stalled").unwrap().is_ok());
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }

    /// Only the retries right after a throttle go first: one that then fails transiently
    /// (`InternalError`) retries in its own lane, behind the callers that queued meanwhile,
    /// not ahead of them again at each of its transient retries.
    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_after_the_priority_retry_waits_in_turn() {
        let p = Arc::new(Pacer::new(
            DELETE_SNAPSHOT,
            one_at_a_time(1.0),
            Stop::default(),
        ));
        let start = Instant::now();
        let attempts = Arc::new(AtomicU32::new(0));
        let first = tokio::spawn({
            let (p, attempts) = (p.clone(), attempts.clone());
            async move {
                p.call("DeleteSnapshot", move || {
                    let n = attempts.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        match n {
                            0 => Err(AwsError::new("DeleteSnapshot", "RequestLimitExceeded", "x")),
                            1 => Err(AwsError::new("DeleteSnapshot", "InternalError", "x")),
                            _ => Ok(Instant::now()),
                        }
                    }
                })
                .await
                .unwrap()
            }
        });
        let (made, after) = super::tests::first_and_five_in(&p, Lane::InTurn, first).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        let at = |t: Instant| t.duration_since(start).as_secs_f64();
        assert!(
            made > after[0],
            "after its priority retry failed transiently it went first again, at {} s \
             (the first of the five at {} s)",
            at(made),
            at(after[0])
        );
    }

    /// EC2's side for the lanes together: every call refused at its first attempt (so every
    /// call takes the retry lane once), and `refuse_always` of them refused without end.
    /// Records every attempt's instant, refused or not.
    struct Refusing {
        attempts: Mutex<Vec<Instant>>,
        seen: Mutex<std::collections::HashSet<usize>>,
        refuse_always: usize,
    }

    impl Refusing {
        async fn call(&self, id: usize) -> Result<(), AwsError> {
            let first = {
                self.attempts.lock().unwrap().push(Instant::now());
                self.seen.lock().unwrap().insert(id)
            };
            tokio::time::sleep(Duration::from_millis(60)).await;
            if first || id < self.refuse_always {
                Err(AwsError::new("DescribeImages", "RequestLimitExceeded", "x"))
            } else {
                Ok(())
            }
        }
    }

    /// `n` calls, 12 in flight, every third ahead of the line and the rest in turn, under
    /// a pacer at `pace` stopping `stop_after` on: each call's result, with the instant
    /// it ended, and every attempt's instant. Fails if the calls are still waiting well
    /// after the stop (a stall).
    async fn lanes(
        n: usize,
        refuse_always: usize,
        pace: Pace,
        stop_after: Duration,
    ) -> (Vec<(usize, Result<(), AwsError>, Instant)>, Vec<Instant>) {
        use futures_util::stream::{self, StreamExt};
        let stop = Stop::with_deadline(Some(Instant::now() + stop_after));
        let p = Pacer::new(DESCRIBE, pace, stop);
        let ec2 = Refusing {
            attempts: Mutex::new(Vec::new()),
            seen: Mutex::new(Default::default()),
            refuse_always,
        };
        let run = stream::iter(0..n)
            .map(|i| {
                let (p, ec2) = (&p, &ec2);
                async move {
                    let r = match i % 3 {
                        0 => p.call_ahead("DescribeImages", || ec2.call(i)).await,
                        _ => p.call("DescribeImages", || ec2.call(i)).await,
                    };
                    (i, r, Instant::now())
                }
            })
            .buffer_unordered(12)
            .collect::<Vec<_>>();
        let results = tokio::time::timeout(stop_after + Duration::from_secs(60), run)
            .await
            .expect("the lanes stalled past the stop");
        for (name, n) in [
            ("retrying", &p.retrying),
            ("retrying_ahead", &p.retrying_ahead),
            ("waiting_in_turn", &p.waiting_in_turn),
            ("waiting_ahead", &p.waiting_ahead),
        ] {
            assert_eq!(n.load(Ordering::SeqCst), 0, "the count {name} leaked");
        }
        let attempts = ec2.attempts.lock().unwrap().clone();
        (results, attempts)
    }

    /// Calls in turn, calls ahead and throttled retries together, every call refused once
    /// (each takes the retry lane): every call is made before the stop (none starved, no
    /// deadlock), and the attempts, refused ones included, never go above the share in
    /// any window.
    #[tokio::test(start_paused = true)]
    async fn the_lanes_together_make_every_call_and_keep_to_the_share() {
        let pace = Pace {
            burst: 10.0,
            per_second: 5.0,
        };
        let (results, attempts) = lanes(150, 0, pace, Duration::from_secs(1800)).await;
        for (i, r, _) in &results {
            assert!(r.is_ok(), "call {i}: {r:?}");
        }
        assert_eq!(attempts.len(), 300, "each call refused once, then made");
        for i in 0..attempts.len() {
            for j in i..attempts.len() {
                let window = attempts[j].duration_since(attempts[i]).as_secs_f64();
                let allowed = pace.burst + window * pace.per_second + 1e-6;
                assert!(
                    (j - i + 1) as f64 <= allowed,
                    "{} attempts in {window} s",
                    j - i + 1
                );
            }
        }
    }

    /// Two calls EC2 refuses without end beside calls in turn and ahead: the others are
    /// all made, the two end throttled at the stop, none made.
    #[tokio::test(start_paused = true)]
    async fn two_calls_refused_without_end_hold_back_neither_lane() {
        let pace = Pace {
            burst: 10.0,
            per_second: 5.0,
        };
        let (results, _) = lanes(24, 2, pace, Duration::from_secs(900)).await;
        for (i, r, _) in &results {
            match r {
                Ok(()) => assert!(*i >= 2, "call {i}, refused without end, was made"),
                Err(e) => assert!(*i < 2 && e.is(THROTTLED), "call {i}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod sides_review {
    //! Review of `c758076` (issue 29): the callers form two sides, in turn ([`Lane::InTurn`]
    //! and its retries [`Lane::Retry`]) and ahead ([`Lane::Ahead`], [`Lane::RetryAhead`]); a
    //! side's waiting retries hold back only its own callers, and while both sides wait the
    //! tokens alternate between them, retries included. Attacks: every mix of the four
    //! lanes is served (no stall, no lane left without a token), the sides alternate and
    //! a side's retries go first, the rate holds, a waiter dropped or stopped mid-wait
    //! leaves no claim, a pacer with one side only (the deletions', the queue worker's)
    //! serves exactly as before, and a call ahead keeps the retry rules of a call in turn.
    use super::tests::{one_at_a_time, throttled_then_made_before_the_five_behind};
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    fn side(l: Lane) -> Lane {
        match l {
            Lane::InTurn | Lane::Retry => Lane::InTurn,
            Lane::Ahead | Lane::RetryAhead => Lane::Ahead,
        }
    }

    fn is_retry(l: Lane) -> bool {
        matches!(l, Lane::Retry | Lane::RetryAhead)
    }

    /// A caller of the pacer: its lane, when it comes (seconds after the pacer's first
    /// token was taken), and when it gives up waiting (`None`: never), by its stop or by
    /// its future being dropped.
    #[derive(Debug, Clone, Copy)]
    struct Caller {
        lane: Lane,
        arrive: f64,
        gives_up: Option<(f64, bool)>,
    }

    /// What happened to each caller: the instant it took its token, or `None` (it gave up
    /// first).
    type Served = Vec<Option<Instant>>;

    /// Runs `callers` at a pacer of `pace` whose first token is already taken: each
    /// caller's token instant (in the order they were taken: `order`). A caller still
    /// waiting an hour on has stalled: the test fails.
    async fn serve(p: &Arc<Pacer>, callers: &[Caller]) -> (Served, Vec<usize>, Instant) {
        let start = Instant::now();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, c) in callers.iter().copied().enumerate() {
            let (p, order) = (p.clone(), order.clone());
            let stop = Stop::default();
            let wait = tokio::spawn({
                let stop = stop.clone();
                async move {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(c.arrive)).await;
                    let got = p.acquire_until(&stop, c.lane).await;
                    got.ok().map(|()| {
                        order.lock().unwrap().push(i);
                        Instant::now()
                    })
                }
            });
            let abort = wait.abort_handle();
            let giving_up = c.gives_up.map(|(at, dropped)| {
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
                    if dropped {
                        abort.abort();
                    } else {
                        stop.request();
                    }
                })
            });
            tasks.push((wait, giving_up));
        }
        let all = async {
            let mut served = Vec::new();
            for (wait, giving_up) in tasks {
                served.push(wait.await.unwrap_or(None));
                if let Some(g) = giving_up {
                    g.await.unwrap();
                }
            }
            served
        };
        let served = tokio::time::timeout(Duration::from_secs(3600), all)
            .await
            .expect("a caller never got its token: the pacer stalled");
        let order = order.lock().unwrap().clone();
        (served, order, start)
    }

    /// No waiter, dropped or stopped or served, is still counted.
    fn no_claim_left(p: &Pacer) {
        for (name, n) in [
            ("waiting_in_turn", &p.waiting_in_turn),
            ("waiting_ahead", &p.waiting_ahead),
            ("retrying", &p.retrying),
            ("retrying_ahead", &p.retrying_ahead),
        ] {
            assert_eq!(n.load(Ordering::SeqCst), 0, "{name} leaked");
        }
    }

    /// A seeded mix of callers: `n` of them, lanes from `lanes`, arriving on the quarter
    /// seconds of the first `span` seconds; `give_up` of them give up (stop or drop) at
    /// some quarter second.
    fn mix(seed: u64, n: usize, lanes: &[Lane], span: u32, give_up: bool) -> Vec<Caller> {
        let mut r = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
        let mut next = |m: u64| {
            r = splitmix(r);
            r % m
        };
        (0..n)
            .map(|_| {
                let lane = lanes[next(lanes.len() as u64) as usize];
                let arrive = f64::from(next(u64::from(span) * 4) as u32) / 4.0;
                let gives_up = (give_up && next(3) == 0).then(|| {
                    let after = f64::from(next(u64::from(span) * 4) as u32) / 4.0;
                    (arrive + after, next(2) == 0)
                });
                Caller {
                    lane,
                    arrive,
                    gives_up,
                }
            })
            .collect()
    }

    /// Whether caller `i` was waiting (come, neither served nor given up) strictly before
    /// instant `t`.
    fn waiting_before(c: &Caller, served: Option<Instant>, start: Instant, t: Instant) -> bool {
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let came = at(c.arrive) < t;
        let not_served = served.is_none_or(|s| s >= t);
        // Giving up at the very instant of a token: it may have gone first.
        let not_gone = c.gives_up.is_none_or(|(g, _)| at(g) > t);
        came && not_served && not_gone
    }

    /// Checks one run: the rate held in every window, a caller that gave up took no token
    /// after it did, every caller that never gave up was served, no side took two tokens
    /// running while the other side waited, and no caller of a side took a token while a
    /// retry of its side waited.
    fn check(pace: Pace, callers: &[Caller], served: &Served, order: &[usize], start: Instant) {
        let ctx = || format!("{callers:?}\nserved {served:?}\norder {order:?}");
        for (c, s) in callers.iter().zip(served) {
            match (c.gives_up, s) {
                (None, None) => panic!("a caller was never served: {}", ctx()),
                (Some((g, _)), Some(s)) => assert!(
                    *s <= start + Duration::from_secs_f64(g),
                    "a token taken after its caller gave up: {}",
                    ctx()
                ),
                _ => {}
            }
        }
        let times: Vec<Instant> = order.iter().map(|&i| served[i].unwrap()).collect();
        for i in 0..times.len() {
            for j in i..times.len() {
                let window = times[j].duration_since(times[i]).as_secs_f64();
                // The first token went before the start: the bucket is empty at it.
                let allowed = 1.0 + window * pace.per_second + 1e-6;
                assert!(
                    (j - i + 1) as f64 <= allowed,
                    "{} tokens in {window} s: {}",
                    j - i + 1,
                    ctx()
                );
            }
        }
        for k in 0..order.len() {
            let (taker, t) = (&callers[order[k]], times[k]);
            let waits = |pred: &dyn Fn(&Caller) -> bool| {
                callers
                    .iter()
                    .zip(served)
                    .any(|(c, s)| pred(c) && waiting_before(c, *s, start, t))
            };
            if !is_retry(taker.lane) {
                assert!(
                    !waits(&|c: &Caller| is_retry(c.lane) && side(c.lane) == side(taker.lane)),
                    "token {k} went to a {:?} while a retry of its side waited: {}",
                    taker.lane,
                    ctx()
                );
            }
            if k > 0 && side(callers[order[k - 1]].lane) == side(taker.lane) {
                assert!(
                    !waits(&|c: &Caller| side(c.lane) != side(taker.lane)),
                    "tokens {} and {k} both went to the side {:?} while the other waited: {}",
                    k - 1,
                    side(taker.lane),
                    ctx()
                );
            }
        }
    }

    const ALL: [Lane; 4] = [Lane::InTurn, Lane::Retry, Lane::Ahead, Lane::RetryAhead];

    fn paces() -> [Pace; 3] {
        [
            one_at_a_time(1.0),
            Pace {
                burst: 1.0,
                per_second: 3.0,
            },
            Pace {
                burst: 1.0,
                per_second: 0.3,
            },
        ]
    }

    /// Every mix of the four lanes, arriving at any time: every caller is served (no
    /// stall, no lane left without a token), the sides alternate while both wait, a
    /// side's retries go before its callers, and the rate holds.
    #[tokio::test(start_paused = true)]
    async fn every_mix_of_lanes_is_served_alternating_sides_at_the_rate() {
        for seed in 0..150 {
            let pace = paces()[seed as usize % 3];
            let callers = mix(seed, 2 + seed as usize % 11, &ALL, 6, false);
            let p = Arc::new(Pacer::new(DESCRIBE, pace, Stop::default()));
            p.acquire().await.unwrap();
            let (served, order, start) = serve(&p, &callers).await;
            check(pace, &callers, &served, &order, start);
            no_claim_left(&p);
        }
    }

    /// The same mixes with a third of the callers giving up mid-wait (their stop fires, or
    /// their future is dropped): none takes a token after, the others are all served on
    /// the same terms, and nothing is left counted; then one caller of each lane, alone,
    /// takes the next token at once (no claim of a side nobody waits in).
    #[tokio::test(start_paused = true)]
    async fn callers_giving_up_mid_wait_leave_no_claim_on_the_tokens() {
        for seed in 0..150 {
            let pace = paces()[seed as usize % 3];
            let callers = mix(seed, 2 + seed as usize % 11, &ALL, 6, true);
            let p = Arc::new(Pacer::new(DESCRIBE, pace, Stop::default()));
            p.acquire().await.unwrap();
            let (served, order, start) = serve(&p, &callers).await;
            check(pace, &callers, &served, &order, start);
            no_claim_left(&p);
            for lane in ALL {
                // A full interval on, the bucket holds a token: it is taken at once.
                tokio::time::sleep(Duration::from_secs_f64(1.0 / pace.per_second)).await;
                let took = Instant::now();
                let got = tokio::time::timeout(
                    Duration::from_secs(3600),
                    p.acquire_until(&Stop::default(), lane),
                )
                .await;
                assert!(got.expect("stalled").is_ok());
                assert!(
                    took.elapsed() <= Duration::from_millis(2),
                    "seed {seed}: alone, a {lane:?} waited {:?}",
                    took.elapsed()
                );
            }
        }
    }

    /// A retry in turn waiting for the alternation while the side ahead's only caller is
    /// held back by a retry ahead: the retry ahead takes the token (the side ahead's turn,
    /// its retry first), then the retry in turn, then the caller ahead, one interval apart.
    #[tokio::test(start_paused = true)]
    async fn a_retry_waiting_for_a_side_whose_caller_is_held_back_by_its_retry_is_served() {
        let pace = one_at_a_time(1.0);
        let p = Arc::new(Pacer::new(DESCRIBE, pace, Stop::default()));
        // The last token went in turn.
        p.acquire().await.unwrap();
        let callers: Vec<Caller> = [Lane::Retry, Lane::Ahead, Lane::RetryAhead]
            .into_iter()
            .map(|lane| Caller {
                lane,
                arrive: 0.0,
                gives_up: None,
            })
            .collect();
        let (served, order, start) = serve(&p, &callers).await;
        check(pace, &callers, &served, &order, start);
        assert_eq!(order, [2, 0, 1], "{served:?}");
        for (k, &i) in order.iter().enumerate() {
            let at = served[i].unwrap() - start;
            assert!(
                at <= Duration::from_secs(k as u64 + 1) + Duration::from_millis(2),
                "token {k} at {at:?}"
            );
        }
        no_claim_left(&p);
    }

    /// The in-turn lanes mirrored ahead (a retry in turn as a retry ahead, a caller in
    /// turn as one ahead).
    fn mirrored(callers: &[Caller]) -> Vec<Caller> {
        callers
            .iter()
            .map(|c| Caller {
                lane: match c.lane {
                    Lane::InTurn => Lane::Ahead,
                    Lane::Retry => Lane::RetryAhead,
                    other => other,
                },
                ..*c
            })
            .collect()
    }

    /// A pacer with one side only (the `DeleteSnapshot` pacer: callers in turn and their
    /// retries; the queue worker's Describe pacer: reads ahead and theirs) never waits for
    /// an alternation: while anyone waits, a token is taken as soon as the bucket holds
    /// one, and the retries go first, as before the sides; and the two serve alike.
    #[tokio::test(start_paused = true)]
    async fn a_pacer_with_one_side_serves_at_once_and_both_sides_alike() {
        for seed in 0..100 {
            let pace = paces()[seed as usize % 3];
            let in_turn = mix(
                seed,
                2 + seed as usize % 11,
                &[Lane::InTurn, Lane::Retry],
                6,
                false,
            );
            let mut runs = Vec::new();
            for callers in [in_turn.clone(), mirrored(&in_turn)] {
                let p = Arc::new(Pacer::new(DESCRIBE, pace, Stop::default()));
                p.acquire().await.unwrap();
                let (served, order, start) = serve(&p, &callers).await;
                check(pace, &callers, &served, &order, start);
                no_claim_left(&p);
                // Work-conserving: once someone waits (the earliest still to be served
                // has come) the next token is taken one interval after the one before at
                // the latest (the bucket holds one by then), never an alternation later.
                let interval = Duration::from_secs_f64(1.0 / pace.per_second);
                let mut last = start;
                for k in 0..order.len() {
                    let t = served[order[k]].unwrap();
                    let first_come = order[k..]
                        .iter()
                        .map(|&i| start + Duration::from_secs_f64(callers[i].arrive))
                        .min()
                        .unwrap();
                    assert!(
                        t <= last.max(first_come) + interval + Duration::from_millis(2),
                        "seed {seed}: token {k} at {:?}, the one before at {:?}: {callers:?}",
                        t - start,
                        last - start
                    );
                    last = t;
                }
                let offsets: Vec<Option<Duration>> =
                    served.iter().map(|s| s.map(|s| s - start)).collect();
                runs.push((offsets, order));
            }
            assert_eq!(
                runs[0], runs[1],
                "seed {seed}: the two sides serve differently"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_ahead_throttled_while_the_pacer_learns_keeps_its_place() {
        for refusals in 1..=PRIORITY_RETRIES {
            // Made before the second of five reads queued behind it, as a call in turn is
            // (`a_call_throttled_while_the_pacer_learns_keeps_its_place`), leaving no claim.
            let p = throttled_then_made_before_the_five_behind(refusals, Lane::Ahead).await;
            no_claim_left(&p);
        }
    }

    /// A read ahead EC2 refuses without end, beside reads ahead and calls in turn: its
    /// first [`PRIORITY_RETRIES`] retries go first within its side (before the reads ahead
    /// that queued behind it), then it waits in its own lane, behind them; every other
    /// call is made, and it ends throttled at the stop, never made.
    #[tokio::test(start_paused = true)]
    async fn a_read_ahead_refused_without_end_holds_back_neither_side() {
        let stop = Stop::with_deadline(Some(Instant::now() + Duration::from_secs(3600)));
        let p = Arc::new(Pacer::new(DESCRIBE, one_at_a_time(1.0), stop));
        let tried = Arc::new(Mutex::new(Vec::new()));
        let refused = tokio::spawn({
            let (p, tried) = (p.clone(), tried.clone());
            async move {
                let f = || {
                    tried.lock().unwrap().push(Instant::now());
                    async {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        Err::<(), _>(AwsError::new("DescribeImages", "RequestLimitExceeded", "x"))
                    }
                };
                p.call_ahead("DescribeImages", f).await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let others: Vec<_> = (0..12)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move {
                    let f = || async { Ok::<_, AwsError>(Instant::now()) };
                    let made = match i % 2 {
                        0 => p.call_ahead("DescribeImages", f).await,
                        _ => p.call("DescribeImageAttribute", f).await,
                    };
                    (i % 2 == 0, made)
                })
            })
            .collect();
        let run = async {
            let mut made = Vec::new();
            for o in others {
                let (ahead, m) = o.await.unwrap();
                made.push((ahead, m.expect("a call beside it was not made")));
            }
            (made, refused.await.unwrap())
        };
        let (made, refused) = tokio::time::timeout(Duration::from_secs(7200), run)
            .await
            .expect("stalled");
        assert!(refused.unwrap_err().is(THROTTLED));
        let reads: Vec<Instant> = made.iter().filter(|(a, _)| *a).map(|(_, t)| *t).collect();
        let tried = tried.lock().unwrap().clone();
        let n = PRIORITY_RETRIES as usize;
        assert!(tried.len() > n + 1, "{} attempts", tried.len());
        let (first_read, last_read) = (reads.iter().min().unwrap(), reads.iter().max().unwrap());
        assert!(
            tried[n] < *first_read,
            "its priority retries did not go before the reads ahead behind it"
        );
        assert!(
            tried[n + 1] > *last_read,
            "after {n} priority retries it went before the reads ahead queued behind it"
        );
        no_claim_left(&p);
    }

    /// A throttled deletion in turn whose retry waits for the alternation with reads ahead
    /// (the Describe pacer's sides do not meet at the `DeleteSnapshot` pacer, but a call in
    /// turn under `call_until` can meet reads ahead): its facts' freshness ends while it
    /// waits, so it is not made, ends throttled, and the reads all go on.
    #[tokio::test(start_paused = true)]
    async fn a_retry_waiting_for_the_other_side_is_not_made_after_its_stop() {
        let p = Arc::new(Pacer::new(DESCRIBE, one_at_a_time(0.5), Stop::default()));
        p.acquire().await.unwrap();
        let fresh = Stop::default();
        let attempts = Arc::new(AtomicU32::new(0));
        let retry = tokio::spawn({
            let (p, fresh, n) = (p.clone(), fresh.clone(), attempts.clone());
            async move {
                let f = || {
                    let k = n.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        match k {
                            0 => Err(AwsError::new("DescribeImages", "RequestLimitExceeded", "x")),
                            _ => Ok(()),
                        }
                    }
                };
                p.call_until("DescribeImages", &fresh, f).await
            }
        });
        // Reads ahead arrive while the call is out: they wait beside its retry.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    let f = || async { Ok::<_, AwsError>(()) };
                    p.call_ahead("DescribeImages", f).await
                })
            })
            .collect();
        for _ in 0..100_000 {
            if p.retrying.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            p.retrying.load(Ordering::SeqCst),
            1,
            "the retry never waited"
        );
        fresh.request();
        let run = async {
            for r in reads {
                r.await.unwrap().unwrap();
            }
            retry.await.unwrap()
        };
        let err = tokio::time::timeout(Duration::from_secs(3600), run)
            .await
            .expect("stalled")
            .unwrap_err();
        assert!(err.is(THROTTLED), "{err}");
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "made after its stop");
        no_claim_left(&p);
    }
}
