//! Continuation: a pair sweep stopped by its invocation's deadline with condemned images
//! left starts its successor at once, so a backlog longer than one invocation drains at
//! the pair's own buckets rather than over several nights. A **chain** is the first run
//! and its continuations: one run of its pair. Pure.
//!
//! - Every link plans at the chain's first instant ([`Chain::planned_at`]) from live facts,
//!   with the same mandate narrowed ([`continuation_mandate`]): it finishes that night's
//!   plan and nothing more.
//! - `max_deregistrations` counts per chain ([`remaining_limit`]).
//! - A retirement stage is advanced at most once per image per chain: a link holds the
//!   images whose retirement tags an earlier link of the chain wrote ([`hold_advanced`]).
//! - A chain is bounded ([`MAX_LINKS`]); a lease per pair ([`claim`]) keeps a second run
//!   of the same pair out while it runs.
//! - Its totals travel in the messages ([`ChainTotals`]); the one summary is sent when
//!   the chain ends.

use serde::{Deserialize, Serialize};

use crate::inventory::Inventory;
use crate::mandate::{Ask, Mandate};
use crate::model::{Image, Timestamp};
use crate::planner::{Action, Plan};
use crate::retire::{DEPRECATED_AT, DISABLED_AT};
use crate::time::{format_instant, parse_instant};

/// Links in a chain at most, the first run included: 10 invocations of 15 minutes drain
/// about 43,000 deregistrations at EC2's 5 a second. It stays under the 16 hops after
/// which Lambda stops a recursive loop, so the template keeps that guard as a second
/// bound. A chain that reaches it ends; its report says how many images are left.
pub const MAX_LINKS: u32 = 10;

/// What a continuation carries besides its pair and run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// This link's place: 1 for the first continuation (the first run is link 0).
    pub link: u32,
    /// The chain's first instant: every link plans at it (RFC 3339).
    pub planned_at: String,
    /// The report of the link this one continues (its key in the report bucket).
    pub continues: String,
    /// What the links before this one did.
    pub totals: ChainTotals,
}

impl Chain {
    /// The chain's first instant; `None` when the message's is unreadable (refused).
    pub fn planned_at(&self) -> Option<Timestamp> {
        parse_instant(&self.planned_at)
    }
}

/// A chain's totals over its links so far: what the one summary at its end adds up.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ChainTotals {
    /// Images deregistered (what `max_deregistrations` counts).
    pub deregistered: u64,
    /// Retirement stages advanced (deprecated, disabled, enabled).
    pub retired: u64,
    /// Failures (images, jobs, regions).
    pub failures: u64,
}

impl ChainTotals {
    /// Both totals added.
    pub fn plus(self, o: ChainTotals) -> ChainTotals {
        ChainTotals {
            deregistered: self.deregistered + o.deregistered,
            retired: self.retired + o.retired,
            failures: self.failures + o.failures,
        }
    }
}

/// How a link ended, as its report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEnd {
    /// It was stopped by its invocation's deadline (not a signal, not a failure).
    pub stopped_by_deadline: bool,
    /// Condemned images it did not get to (deferred by the stop).
    pub left: u64,
    /// What it did.
    pub totals: ChainTotals,
}

/// What a link that ended does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The chain is over: its summary is sent with these totals.
    Done(ChainTotals),
    /// The chain goes on with this link.
    Continue(Chain),
    /// The chain reached [`MAX_LINKS`] with images left: it ends, and its summary says so.
    LimitReached {
        /// The chain's totals.
        totals: ChainTotals,
        /// Condemned images left for the next run.
        left: u64,
    },
}

/// The step after a link: continue only when the deadline stopped it with condemned
/// images left, never past [`MAX_LINKS`]. `chain` is the ended link's own (`None` for a
/// first run), `planned_at` the instant it planned at, `report` its report's key.
pub fn next(chain: Option<&Chain>, planned_at: Timestamp, report: &str, end: LinkEnd) -> Next {
    let before = chain.map(|c| c.totals).unwrap_or_default();
    let totals = before.plus(end.totals);
    if !end.stopped_by_deadline || end.left == 0 {
        return Next::Done(totals);
    }
    let link = chain.map_or(1, |c| c.link + 1);
    if link >= MAX_LINKS {
        return Next::LimitReached {
            totals,
            left: end.left,
        };
    }
    Next::Continue(Chain {
        link,
        planned_at: chain.map_or_else(|| format_instant(planned_at), |c| c.planned_at.clone()),
        continues: report.to_string(),
        totals,
    })
}

/// A continuation's mandate: the link's own, every stage it had kept, reconciliation
/// included: what a link's deadline left of its storage (a snapshot still in use, a
/// deletion the stop came before) carries the sweep's mark, and the next link deletes it in
/// process at the pair's own pacers rather than leaving it to the cleanup queue, whose
/// worker must wait out the chain's lease (a queued copy of the job is verified again and
/// finds it gone). Made with [`Mandate::narrow`], the one function that narrows: it never
/// widens (a scoped mandate has no reconcile stage to keep).
pub fn continuation_mandate(m: &Mandate) -> Mandate {
    m.narrow(&Ask::default())
}

/// `max_deregistrations` left to a link: the policy's, less what the chain's earlier links
/// deregistered (`None`: no limit).
pub fn remaining_limit(limit: Option<u64>, chain: Option<&Chain>) -> Option<u64> {
    let done = chain.map_or(0, |c| c.totals.deregistered);
    limit.map(|l| l.saturating_sub(done))
}

/// Whether an earlier link of the chain planned at `planned_at` advanced this image's
/// retirement: ami-sweeper stamps its retirement tags with the plan's instant, and every
/// link plans at the chain's, so a stamp at or after it is this chain's.
pub fn advanced_in_chain(image: &Image, planned_at: Timestamp) -> bool {
    [DEPRECATED_AT, DISABLED_AT].iter().any(|k| {
        image
            .tags
            .get(k)
            .and_then(parse_instant)
            .is_some_and(|t| t >= planned_at)
    })
}

/// Holds, in a continuation's plan, every image an earlier link of its chain advanced:
/// its decision leaves the plan (out of this link's reach, as a scope does), so no stage
/// is advanced twice in one chain. Returns a warning per held image.
pub fn hold_advanced(plan: &mut Plan, inventory: &Inventory, planned_at: Timestamp) -> Vec<String> {
    let held: Vec<String> = inventory
        .images()
        .iter()
        .filter(|i| advanced_in_chain(i, planned_at))
        .map(|i| i.id.clone())
        .filter(|id| {
            plan.decisions
                .iter()
                .any(|d| &d.image_id == id && d.action != Action::Keep)
        })
        .collect();
    plan.retain_decisions(|d| d.action == Action::Keep || !held.contains(&d.image_id));
    held.into_iter()
        .map(|id| {
            format!(
                "{id}: its retirement was advanced earlier in this chain; held for the next run"
            )
        })
        .collect()
}

/// A pair's lease: which run holds the pair, and until when. Kept in the report bucket,
/// written only with S3's conditional writes, so two runs cannot both take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The run (the dispatcher's instant) whose chain holds the pair.
    pub run: String,
    /// The link holding it.
    pub link: u32,
    /// When it lapses (RFC 3339): a holder that died without releasing it.
    pub until: String,
    /// Held by a cleanup worker for one batch of the pair's queued jobs (not by a chain):
    /// `run` is then the worker's own id, and `until` its invocation's end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub worker: bool,
}

/// What a message may do with its pair's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Take (or renew) it and sweep.
    Take,
    /// Another run holds the pair: skip it, with this line in the report.
    Skip(String),
    /// A cleanup worker holds the pair for one batch of its queued jobs: a chain waits
    /// for it to release the lease (or for the lease to lapse at this instant), so that
    /// the pair's `DeleteSnapshot` bucket never has two users at once.
    Wait(Timestamp),
}

/// Whether a message of `run` at chain link `link` may take its pair's lease `held` at
/// `now`: a free or lapsed lease is taken; the holder's own chain takes it on at a later
/// link (or the same one, redelivered); anything else is skipped while the lease holds.
/// An unreadable lease holds (fail closed) until it is removed by hand or by its holder.
pub fn claim(held: Option<&Lease>, run: &str, link: u32, now: Timestamp) -> Claim {
    let Some(l) = held else {
        return Claim::Take;
    };
    if l.run == run && link >= l.link && !l.worker {
        return Claim::Take;
    }
    match parse_instant(&l.until) {
        Some(until) if until <= now => Claim::Take,
        Some(until) if l.worker => Claim::Wait(until),
        _ => Claim::Skip(format!(
            "skipped: run {} (link {}) still sweeps this pair (its lease holds until {}); \
             nothing was done",
            l.run, l.link, l.until
        )),
    }
}

/// Whether a cleanup worker may take the pair's lease `held` at `now` to run one batch of
/// the pair's queued jobs: only a free or lapsed lease. While a chain holds the pair its
/// pair sweeper deletes the pair's storage itself, and while another worker holds it that
/// worker does: either way the jobs are left alone (returned to the queue for later), so
/// one pair's `DeleteSnapshot` bucket is never paced by two workers at once. An unreadable
/// lease holds (fail closed).
pub fn worker_claim(held: Option<&Lease>, now: Timestamp) -> Claim {
    let Some(l) = held else {
        return Claim::Take;
    };
    match parse_instant(&l.until) {
        Some(until) if until <= now => Claim::Take,
        _ => Claim::Skip(format!(
            "left for later: {} {} holds this pair's storage (its lease holds until {})",
            if l.worker { "cleanup worker" } else { "run" },
            l.run,
            l.until
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        parse_instant(s).unwrap()
    }

    fn end(stopped: bool, left: u64, deregistered: u64) -> LinkEnd {
        LinkEnd {
            stopped_by_deadline: stopped,
            left,
            totals: ChainTotals {
                deregistered,
                ..ChainTotals::default()
            },
        }
    }

    #[test]
    fn a_link_continues_only_when_the_deadline_left_work_and_never_past_the_limit() {
        let t0 = at("2026-12-06T03:00:00Z");
        let later = at("2026-12-06T03:15:00Z");
        assert_eq!(
            next(None, t0, "r0", end(false, 3, 5)),
            Next::Done(ChainTotals {
                deregistered: 5,
                ..Default::default()
            })
        );
        assert!(matches!(
            next(None, t0, "r0", end(true, 0, 5)),
            Next::Done(_)
        ));
        let Next::Continue(first) = next(None, t0, "r0", end(true, 7, 5)) else {
            panic!("continues")
        };
        assert_eq!(first.link, 1);
        assert_eq!(first.continues, "r0");
        assert_eq!(first.planned_at(), Some(t0));
        // A later link keeps the chain's first instant, whatever its own was.
        let Next::Continue(second) = next(Some(&first), later, "r1", end(true, 2, 4)) else {
            panic!("continues")
        };
        assert_eq!((second.link, second.planned_at()), (2, Some(t0)));
        assert_eq!(second.totals.deregistered, 9);
        let mut last = second.clone();
        last.link = MAX_LINKS - 1;
        assert_eq!(
            next(Some(&last), later, "r9", end(true, 2, 1)),
            Next::LimitReached {
                totals: ChainTotals {
                    deregistered: 10,
                    ..Default::default()
                },
                left: 2
            }
        );
    }

    #[test]
    fn max_deregistrations_counts_per_chain() {
        let chain = Chain {
            link: 1,
            planned_at: "2026-12-06T03:00:00Z".into(),
            continues: "r0".into(),
            totals: ChainTotals {
                deregistered: 7,
                ..Default::default()
            },
        };
        assert_eq!(remaining_limit(Some(10), Some(&chain)), Some(3));
        assert_eq!(remaining_limit(Some(5), Some(&chain)), Some(0));
        assert_eq!(remaining_limit(None, Some(&chain)), None);
        assert_eq!(remaining_limit(Some(10), None), Some(10));
    }

    #[test]
    fn the_lease_keeps_a_second_run_of_the_pair_out() {
        let now = at("2026-12-07T03:00:00Z");
        let held = Lease {
            run: "night-1".into(),
            link: 2,
            until: "2026-12-07T03:20:00Z".into(),
            worker: false,
        };
        assert_eq!(claim(None, "night-2", 0, now), Claim::Take);
        assert_eq!(claim(Some(&held), "night-1", 3, now), Claim::Take);
        assert_eq!(claim(Some(&held), "night-1", 2, now), Claim::Take);
        // An older link of the same chain (a stale redelivery) is out too.
        assert!(matches!(
            claim(Some(&held), "night-1", 1, now),
            Claim::Skip(_)
        ));
        let Claim::Skip(line) = claim(Some(&held), "night-2", 0, now) else {
            panic!("skipped")
        };
        assert!(line.contains("night-1"), "{line}");
        let lapsed = at("2026-12-07T03:21:00Z");
        assert_eq!(claim(Some(&held), "night-2", 0, lapsed), Claim::Take);
        let unreadable = Lease {
            until: "soon".into(),
            ..held.clone()
        };
        assert!(matches!(
            claim(Some(&unreadable), "night-2", 0, lapsed),
            Claim::Skip(_)
        ));
    }

    #[test]
    fn a_pair_has_one_deleter_a_chain_or_one_worker() {
        let now = at("2026-12-07T03:00:00Z");
        let chain = Lease {
            run: "night-1".into(),
            link: 0,
            until: "2026-12-07T03:20:00Z".into(),
            worker: false,
        };
        let worker = Lease {
            run: "worker-7".into(),
            link: 0,
            until: "2026-12-07T03:02:00Z".into(),
            worker: true,
        };
        // A worker takes only a free or lapsed pair: a chain's or another worker's is left.
        assert_eq!(worker_claim(None, now), Claim::Take);
        assert!(matches!(worker_claim(Some(&chain), now), Claim::Skip(_)));
        let Claim::Skip(line) = worker_claim(Some(&worker), now) else {
            panic!("left for later")
        };
        assert!(line.contains("worker-7"), "{line}");
        assert_eq!(
            worker_claim(Some(&worker), at("2026-12-07T03:02:00Z")),
            Claim::Take
        );
        let unreadable = Lease {
            until: "soon".into(),
            ..worker.clone()
        };
        assert!(matches!(
            worker_claim(Some(&unreadable), now),
            Claim::Skip(_)
        ));
        // A chain waits for a worker's batch (never skips the night for it), then takes.
        assert_eq!(
            claim(Some(&worker), "night-1", 0, now),
            Claim::Wait(at("2026-12-07T03:02:00Z"))
        );
        // Even a worker whose id reads like the chain's run.
        let namesake = Lease {
            run: "night-1".into(),
            ..worker.clone()
        };
        assert!(matches!(
            claim(Some(&namesake), "night-1", 0, now),
            Claim::Wait(_)
        ));
        assert_eq!(
            claim(Some(&worker), "night-1", 0, at("2026-12-07T03:03:00Z")),
            Claim::Take
        );
        // A worker's lease round-trips; a chain's reads as before (no `worker` key).
        let text = serde_json::to_string(&chain).unwrap();
        assert!(!text.contains("worker"), "{text}");
        let back: Lease = serde_json::from_str(&serde_json::to_string(&worker).unwrap()).unwrap();
        assert_eq!(back, worker);
    }
}
