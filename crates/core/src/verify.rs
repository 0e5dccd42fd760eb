//! What the cleanup worker checks before it deletes anything a queue message asks for.
//! Pure: the facts come from one batched `DescribeSnapshots` and one `DescribeImages` per
//! message batch; this module only decides.
//!
//! A queue message is not trusted: anyone who can send to the queue (or a bug) could name
//! any snapshot or bundle. So a job runs only when AWS's own records say it is what the
//! sweep would have queued: the storage is the account's, nobody else owns it, the
//! policy does not keep it, it demonstrably belonged to the job's image, and that image is
//! gone. A job that fails is rejected with the reason: nothing is deleted.

use std::collections::{BTreeMap, BTreeSet};

use crate::jobs::{CleanupJob, JobTarget};
use crate::mandate::Mandate;
use crate::model::Snapshot;
use crate::orphans::{image_named_by, STORAGE_MARK};
use crate::policy::Glob;

/// The deployment's limits on what a worker may delete, set at deploy time.
#[derive(Debug, Clone)]
pub struct WorkerRules {
    /// The deployment's ceiling (its configured policy): a job runs only within it, and
    /// within the mandate it carries.
    pub ceiling: Mandate,
    /// The accounts under the policy's OUs, as Organizations lists them (resolved by the
    /// edge when the ceiling needs them); `None`: not resolved, so no member account's job
    /// runs under an organization rule.
    pub members: Option<BTreeSet<String>>,
    /// Buckets whose bundles may be deleted; empty: bundle cleanup is off.
    pub bundle_buckets: BTreeSet<String>,
    /// The policy's exclude tags: storage carrying one is kept on purpose.
    pub exclude_tags: BTreeMap<String, Glob>,
    /// The role the worker assumes in a job's member account.
    pub member_role: String,
}

/// The worker's decision about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything checks out: run the job.
    Proceed,
    /// The snapshot does not exist (or is not the account's): nothing to delete.
    Gone,
    /// Refused, with the reason; nothing is deleted.
    Reject(String),
}

impl WorkerRules {
    /// The rules of a deployment: the ceiling of its policy (regions, else
    /// `default_region`; accounts), its exclude tags, and the bundle buckets configured at
    /// deploy time.
    pub fn new(
        policy: &crate::policy::Policy,
        default_region: Option<&str>,
        bundle_buckets: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            ceiling: Mandate::ceiling(policy, false, default_region),
            members: None,
            bundle_buckets: bundle_buckets
                .into_iter()
                .map(|b| b.trim().to_string())
                .filter(|b| !b.is_empty())
                .collect(),
            exclude_tags: policy.selection.exclude_tags.clone(),
            member_role: policy.member_role_name.clone(),
        }
    }

    /// Where a job may act: the mandate it carries within the ceiling, its account and
    /// region admitted by both; a bundle job never names a member account (bundle buckets
    /// are the hub's), and no dry run ever queues a job.
    pub fn check_place(&self, job: &CleanupJob) -> Result<(), String> {
        if job.mandate.as_ref().is_some_and(|m| m.dry_run) {
            return Err("its mandate is a dry run, which queues no jobs".into());
        }
        if job.account.is_some() && matches!(job.target, JobTarget::DeleteBundle { .. }) {
            return Err(
                "bundle buckets are the hub's: a member account's bundle job is \
                 never run"
                    .into(),
            );
        }
        self.ceiling.admits_message(
            job.mandate.as_ref(),
            job.account.as_deref(),
            &job.region,
            self.members.as_ref(),
        )
    }

    /// A snapshot job: `found` is the snapshot as `DescribeSnapshots --owner-ids self`
    /// reports it (`None`: not the account's, or gone); `image_registered` whether the
    /// job's image is still registered in any state.
    pub fn snapshot_job(
        &self,
        snapshot_id: &str,
        image_id: &str,
        found: Option<&Snapshot>,
        image_registered: bool,
        now: crate::model::Timestamp,
    ) -> Verdict {
        let Some(s) = found else {
            return Verdict::Gone;
        };
        let reject =
            |why: String| Verdict::Reject(format!("{snapshot_id}: {why}; nothing was deleted"));
        if s.tags.contains_key("aws:backup:source-resource")
            || s.description.contains("AWS Backup service")
        {
            return reject("AWS Backup manages it".into());
        }
        if let Some(k) = self
            .exclude_tags
            .iter()
            .find(|(k, g)| s.tags.get(k).is_some_and(|v| g.matches(v)))
            .map(|(k, _)| k)
        {
            return reject(format!("it carries the policy's exclude tag {k:?}"));
        }
        let marked = s.tags.get(STORAGE_MARK) == Some(image_id);
        let described = image_named_by(&s.description) == Some(image_id);
        if !marked && !described {
            return reject(format!(
                "nothing ties it to {image_id} (no {STORAGE_MARK} tag naming it, and its \
                 description {:?} names {})",
                s.description,
                image_named_by(&s.description).unwrap_or("no image")
            ));
        }
        if image_registered {
            return reject(format!("its image {image_id} is still registered"));
        }
        if let Some(why) = crate::recycle_bin::still_deferred(&s.tags, now) {
            return reject(why);
        }
        Verdict::Proceed
    }

    /// A bundle job: the bucket must be allowed, and no registered image may have the
    /// manifest as its `ImageLocation` (`registered_locations`).
    pub fn bundle_job(
        &self,
        bucket: &str,
        manifest_key: &str,
        registered_locations: &BTreeSet<String>,
    ) -> Verdict {
        let target = format!("s3://{bucket}/{manifest_key}");
        if self.bundle_buckets.is_empty() {
            return Verdict::Reject(format!(
                "{target}: bundle cleanup is off in this deployment; nothing was deleted"
            ));
        }
        if !self.bundle_buckets.contains(bucket) {
            return Verdict::Reject(format!(
                "{target}: bucket {bucket:?} is not among the deployment's bundle buckets; \
                 nothing was deleted"
            ));
        }
        if registered_locations.contains(&format!("{bucket}/{manifest_key}")) {
            return Verdict::Reject(format!(
                "{target}: a registered image still launches from this manifest; nothing was deleted"
            ));
        }
        Verdict::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recycle_bin::DELETE_AFTER;

    fn rules() -> WorkerRules {
        let policy = crate::policy::Policy::from_json(
            r#"{"retention": {"min_age_days": 1}, "selection": {"exclude_tags": {"retain": "*"}}}"#,
        )
        .unwrap();
        WorkerRules::new(&policy, Some("us-east-1"), ["bundles".to_string()])
    }

    fn snap(description: &str, tags: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            id: "snap-1".into(),
            description: description.into(),
            start_time: None,
            size_gib: None,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_snapshot_job_runs_only_when_everything_ties_up() {
        let r = rules();
        let created = "Created by CreateImage(i-1) for ami-1";
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let ok =
            |s: &Snapshot, registered| r.snapshot_job("snap-1", "ami-1", Some(s), registered, now);
        assert_eq!(ok(&snap(created, &[]), false), Verdict::Proceed);
        assert_eq!(
            ok(&snap("", &[(STORAGE_MARK, "ami-1")]), false),
            Verdict::Proceed
        );
        assert_eq!(
            r.snapshot_job("snap-1", "ami-1", None, false, now),
            Verdict::Gone
        );
        let rejected = |v: Verdict, needle: &str| match v {
            Verdict::Reject(why) => assert!(why.contains(needle), "{why}"),
            other => panic!("{other:?}"),
        };
        rejected(
            ok(&snap("my manual backup", &[]), false),
            "nothing ties it to ami-1",
        );
        rejected(
            ok(&snap("", &[(STORAGE_MARK, "ami-2")]), false),
            "nothing ties it",
        );
        rejected(ok(&snap(created, &[]), true), "still registered");
        rejected(ok(&snap(created, &[("retain", "x")]), false), "exclude tag");
        rejected(
            ok(
                &snap(created, &[("aws:backup:source-resource", "x")]),
                false,
            ),
            "AWS Backup",
        );
        // A forged or early job for a snapshot whose image may still be restored.
        let waiting = [
            (STORAGE_MARK, "ami-1"),
            (DELETE_AFTER, "2026-12-03T00:00:00Z"),
        ];
        rejected(ok(&snap("", &waiting), false), "deferred until 2026-12-03");
        let due = [
            (STORAGE_MARK, "ami-1"),
            (DELETE_AFTER, "2026-11-25T00:00:00Z"),
        ];
        assert_eq!(ok(&snap("", &due), false), Verdict::Proceed);
    }

    #[test]
    fn a_job_may_name_only_an_account_and_region_the_deployment_sweeps() {
        let job = |account: Option<&str>, region: &str| {
            let mut j = CleanupJob::new(
                region,
                "ami-1",
                JobTarget::DeleteSnapshot {
                    snapshot_id: "snap-1".into(),
                },
            );
            j.account = account.map(str::to_string);
            j
        };
        let own = rules();
        assert!(own.check_place(&job(None, "us-east-1")).is_ok());
        assert!(own
            .check_place(&job(Some("111122223333"), "us-east-1"))
            .is_err());
        assert!(own
            .check_place(&job(None, "mars-north-1"))
            .unwrap_err()
            .contains("mars-north-1"));
        let policy = |accounts: &str| {
            crate::policy::Policy::from_json(&format!(
                r#"{{"dry_run": false, "retention": {{"min_age_days": 1}}, "accounts": {accounts}}}"#
            ))
            .unwrap()
        };
        let listed = WorkerRules::new(&policy(r#"["111122223333"]"#), Some("us-east-1"), []);
        assert!(listed
            .check_place(&job(Some("111122223333"), "us-east-1"))
            .is_ok());
        assert!(listed
            .check_place(&job(Some("444455556666"), "us-east-1"))
            .is_err());
        assert!(listed.check_place(&job(None, "us-east-1")).is_err());
        // An OU rule admits only the accounts Organizations lists under the OUs.
        let mut org = WorkerRules::new(
            &policy(r#"{"organization": {"ou_ids": ["ou-ab12-cdef3456"]}}"#),
            Some("us-east-1"),
            [],
        );
        assert!(org
            .check_place(&job(Some("111122223333"), "us-east-1"))
            .is_err());
        org.members = Some(["111122223333".to_string()].into());
        assert!(org
            .check_place(&job(Some("111122223333"), "us-east-1"))
            .is_ok());
        assert!(
            org.check_place(&job(Some("444455556666"), "us-east-1"))
                .is_err(),
            "an account outside the OUs that happens to have the member role"
        );
        // A job whose mandate came from another policy, or from a dry run, is refused.
        let mut changed = job(Some("111122223333"), "us-east-1");
        let mut m = org.ceiling.clone();
        m.policy_digest = "f".repeat(64);
        changed.mandate = Some(m);
        assert!(org
            .check_place(&changed)
            .unwrap_err()
            .contains("policy changed"));
        let mut dry = job(Some("111122223333"), "us-east-1");
        let mut m = org.ceiling.clone();
        m.dry_run = true;
        dry.mandate = Some(m);
        assert!(org.check_place(&dry).unwrap_err().contains("dry run"));
        // A member account's bundle job: never.
        let mut bundle = CleanupJob::new(
            "us-east-1",
            "ami-1",
            JobTarget::DeleteBundle {
                bucket: "bundles".into(),
                manifest_key: "a.manifest.xml".into(),
            },
        );
        bundle.account = Some("111122223333".into());
        assert!(org.check_place(&bundle).unwrap_err().contains("hub's"));
    }

    #[test]
    fn bundle_jobs_need_an_allowed_bucket_and_no_registered_user() {
        let r = rules();
        let none = BTreeSet::new();
        assert_eq!(
            r.bundle_job("bundles", "a.manifest.xml", &none),
            Verdict::Proceed
        );
        let used: BTreeSet<String> = ["bundles/a.manifest.xml".to_string()].into_iter().collect();
        assert!(matches!(
            r.bundle_job("bundles", "a.manifest.xml", &used),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            r.bundle_job("other", "a.manifest.xml", &none),
            Verdict::Reject(_)
        ));
        let off = WorkerRules {
            bundle_buckets: BTreeSet::new(),
            ..rules()
        };
        match off.bundle_job("bundles", "a.manifest.xml", &none) {
            Verdict::Reject(why) => assert!(why.contains("bundle cleanup is off")),
            other => panic!("{other:?}"),
        }
    }
}
