//! A sweep's in-process worker: the cleanup jobs of one (account, Region), run right
//! behind its deregistrations through [`verify_and_run`], the function the queue's worker
//! calls, so the two can never disagree about a job. Jobs are verified in rounds: every
//! job ready when a round starts shares its one round of facts, so the pair's Describe
//! bucket (shared with the sweep's own reads) pays for facts per round, not per job.

use std::collections::VecDeque;
use std::pin::pin;

use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::oneshot;

use crate::app::cleanup::{report_of, Attempt, RetryPolicy};
use crate::app::progress::{Progress, ProgressSink};
use crate::app::report::{JobOutcome, JobReport};
use crate::app::worker::{verify_and_run, Handled, Pacing, Place};
use crate::jobs::CleanupJob;
use crate::model::Timestamp;
use crate::ports::Cleaner;
use crate::verify::WorkerRules;

/// What a sweep's in-process worker needs besides its jobs and its clients.
#[derive(Debug, Clone, Copy)]
pub struct InProcess<'a> {
    /// The rules every job is verified by ([`WorkerRules::in_process`]).
    pub rules: &'a WorkerRules,
    /// The (account, Region) the clients act in.
    pub place: &'a Place,
    /// The worker's pacers (Describe for the facts, `DeleteSnapshot`), the policy's share,
    /// and the run's stop.
    pub pacing: Pacing<'a>,
    /// Attempts per job and the wait before a retry (`concurrency` caps the rounds at
    /// once, below [`IN_PROCESS_ROUNDS`]).
    pub retry: &'a RetryPolicy,
    /// Where progress goes.
    pub progress: Option<&'a ProgressSink>,
    /// The instant the storage rules judge at (the sweep's).
    pub now: Timestamp,
}

/// At most this many jobs ready at once are verified together (one round of facts).
pub const IN_PROCESS_BATCH: usize = 50;

/// At most this many rounds at once: one reading its facts while another deletes. More
/// would split the jobs ready at once into rounds of one, each paying the whole round of
/// Describe calls at the bucket the sweep reads from too. A round takes its jobs only
/// once no other is reading: the jobs made ready meanwhile (a sweep's first
/// deregistrations come in a burst) share the next round, which could not read sooner.
pub const IN_PROCESS_ROUNDS: usize = 2;

/// Runs a sweep's jobs in process as they become ready, each attempt through
/// [`verify_and_run`]: a job runs only if the verification the queue's worker makes
/// clears it, on facts read for that attempt. The jobs ready when a round can start (up to
/// [`IN_PROCESS_BATCH`]) share its facts. What asks for a retry (a snapshot still in use,
/// facts gone stale) is verified and tried again after `retry.delay`, up to
/// `retry.attempts`; when the run stops, nothing waits for another attempt: it is
/// reported `retrying`, and since its storage carries the sweep's mark, the next sweep
/// reconciles it. A job waiting to retry holds no round.
pub async fn run_in_process<C: Cleaner>(
    jobs: impl Stream<Item = CleanupJob> + Send,
    c: &C,
    w: InProcess<'_>,
) -> Vec<JobReport> {
    run_in_process_leaving(jobs, c, w).await.0
}

/// A job and its attempt number (1 for the first).
type Try = (CleanupJob, u32);

/// As [`run_in_process`], with the jobs left unsettled: those the run's stop ended before
/// they could be verified and run, and those still asking for a retry after the last
/// attempt (a snapshot still in use). Their reports say `retrying` or `failed`; the
/// caller may hand them to the cleanup queue, the durable path for what is left.
pub async fn run_in_process_leaving<C: Cleaner>(
    jobs: impl Stream<Item = CleanupJob> + Send,
    c: &C,
    w: InProcess<'_>,
) -> (Vec<JobReport>, Vec<CleanupJob>) {
    // Fused: the stream is never polled again once it has ended.
    let mut jobs = pin!(jobs.fuse());
    let rounds_at_once = w.retry.concurrency.clamp(1, IN_PROCESS_ROUNDS);
    let mut t = Tally::new(w);
    let mut ready: VecDeque<Try> = VecDeque::new();
    let mut rounds = FuturesUnordered::new();
    let mut waits = FuturesUnordered::new();
    // The round reading its facts, answered once they are read.
    let mut reading: Option<oneshot::Receiver<()>> = None;
    let mut ended = false;
    loop {
        while rounds.len() < rounds_at_once && !ready.is_empty() && reading.is_none() {
            let batch: Vec<Try> = ready.drain(..ready.len().min(IN_PROCESS_BATCH)).collect();
            let (read, done) = oneshot::channel();
            reading = Some(done);
            rounds.push(round(batch, c, w, read));
        }
        if ended && ready.is_empty() && rounds.is_empty() && waits.is_empty() {
            break;
        }
        tokio::select! {
            job = jobs.next(), if !ended => match job {
                Some(job) => {
                    t.queued += 1;
                    ready.push_back((job, 1));
                    // Everything else already waiting joins the same round.
                    while let Some(next) = futures_util::FutureExt::now_or_never(jobs.next()) {
                        let Some(job) = next else {
                            ended = true;
                            break;
                        };
                        t.queued += 1;
                        ready.push_back((job, 1));
                    }
                }
                None => ended = true,
            },
            _ = facts_read(&mut reading), if reading.is_some() => reading = None,
            Some(handled) = rounds.next(), if !rounds.is_empty() => {
                let again = t.settle_round(handled);
                if !again.is_empty() {
                    waits.push(wait_to_retry(again, w));
                }
            }
            Some(again) = waits.next(), if !waits.is_empty() => {
                if w.pacing.stop.reason().is_some() {
                    t.stopped_waiting(again);
                } else {
                    ready.extend(again.into_iter().map(|(j, n, _)| (j, n + 1)));
                }
            }
        }
    }
    t.out
        .sort_by(|a, b| (&a.image_id, &a.target).cmp(&(&b.image_id, &b.target)));
    (t.out, t.left)
}

/// One round: the batch verified on one round of facts (`read` answered once they are
/// read) and run; each answer with its attempt number.
async fn round<C: Cleaner>(
    batch: Vec<Try>,
    c: &C,
    w: InProcess<'_>,
    read: oneshot::Sender<()>,
) -> Vec<(Handled, u32)> {
    let (jobs, tries): (Vec<CleanupJob>, Vec<u32>) = batch.into_iter().unzip();
    let handled = verify_and_run(c, w.rules, w.pacing, w.place, jobs, w.now, Some(read)).await;
    handled.into_iter().zip(tries).collect()
}

/// Resolves once the reading round's facts are read (or the round is gone); never while
/// no round reads.
async fn facts_read(reading: &mut Option<oneshot::Receiver<()>>) {
    match reading {
        Some(done) => {
            let _ = done.await;
        }
        None => std::future::pending().await,
    }
}

/// Jobs asking for a retry, with the error of their last attempt: back after
/// `retry.delay`, or at once when the run stops (to be reported, not run).
async fn wait_to_retry(
    again: Vec<(CleanupJob, u32, String)>,
    w: InProcess<'_>,
) -> Vec<(CleanupJob, u32, String)> {
    tokio::select! {
        _ = tokio::time::sleep(w.retry.delay) => {}
        _ = w.pacing.stop.wait() => {}
    }
    again
}

/// What the in-process worker settled so far: the reports, the jobs left unsettled, and
/// the counts its progress reports.
struct Tally<'a> {
    w: InProcess<'a>,
    out: Vec<JobReport>,
    left: Vec<CleanupJob>,
    queued: usize,
    finished: usize,
}

impl<'a> Tally<'a> {
    fn new(w: InProcess<'a>) -> Self {
        Self {
            w,
            out: Vec::new(),
            left: Vec::new(),
            queued: 0,
            finished: 0,
        }
    }

    /// Records a settled job's report (and keeps it to hand on when `unsettled`).
    fn finish(&mut self, job: CleanupJob, report: JobReport, unsettled: bool) {
        self.finished += 1;
        let (done, queued) = (self.finished, self.queued);
        crate::app::progress::report(self.w.progress, || Progress::JobsDone {
            region: job.region.clone(),
            done,
            queued,
        });
        self.out.push(report);
        if unsettled {
            self.left.push(job);
        }
    }

    /// Settles a round's answers; the jobs to try again, with their errors.
    fn settle_round(&mut self, handled: Vec<(Handled, u32)>) -> Vec<(CleanupJob, u32, String)> {
        let stopped = self.w.pacing.stop.reason().is_some();
        let mut again = Vec::new();
        for (h, n) in handled {
            match settle(h, n, self.w.retry, stopped) {
                Settled::Done(job, report, unsettled) => self.finish(job, report, unsettled),
                Settled::Again(job, e) => {
                    // As the queue's worker says it: the one trace of a retry's cause.
                    tracing::warn!(target = %job.target_label(), attempt = n, error = %e, "job will be retried");
                    again.push((job, n, e))
                }
            }
        }
        again
    }

    /// Jobs whose retry the run's stop came before: reported `retrying` and left.
    fn stopped_waiting(&mut self, again: Vec<(CleanupJob, u32, String)>) {
        for (job, n, e) in again {
            let e = format!("{e}; stopped before the next attempt");
            let report = report_of(&job, JobOutcome::Retrying, n, Vec::new(), Some(e));
            self.finish(job, report, true);
        }
    }
}

/// What an in-process attempt left of a job.
enum Settled {
    /// Settled, with its report; `true` when it is left unsettled (still asking for a
    /// retry: the run stopped, or its attempts ran out).
    Done(CleanupJob, JobReport, bool),
    /// To be verified and tried again, after this error.
    Again(CleanupJob, String),
}

/// The report of a job's attempt `n`, or the job back with its error when it is to be
/// tried again.
fn settle(h: Handled, n: u32, retry: &RetryPolicy, stopped: bool) -> Settled {
    let (job, outcome, deleted, error, left) = match h {
        Handled::Malformed(e) => unreachable!("verify_and_run parses nothing: {e}"),
        Handled::Rejected(job, why) => (job, JobOutcome::Rejected, Vec::new(), Some(why), false),
        Handled::Ran(job, Attempt::Done(o, d)) => (job, o, d, None, false),
        Handled::Ran(job, Attempt::Retry(e)) if stopped => {
            let e = format!("{e}; stopped before the next attempt");
            (job, JobOutcome::Retrying, Vec::new(), Some(e), true)
        }
        Handled::Ran(job, Attempt::Retry(e)) if n < retry.attempts => {
            return Settled::Again(job, e)
        }
        Handled::Ran(job, Attempt::Retry(e)) => {
            (job, JobOutcome::Failed, Vec::new(), Some(e), true)
        }
        Handled::Ran(job, Attempt::Fail(e)) => {
            (job, JobOutcome::Failed, Vec::new(), Some(e), false)
        }
    };
    let report = report_of(&job, outcome, n, deleted, error);
    Settled::Done(job, report, left)
}
