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

use crate::model::Snapshot;
use crate::orphans::{image_named_by, STORAGE_MARK};
use crate::policy::Glob;

/// The deployment's limits on what a worker may delete, set at deploy time.
#[derive(Debug, Clone, Default)]
pub struct WorkerRules {
    /// Regions the deployment sweeps; a job for any other region is rejected (and no
    /// client is ever built for it).
    pub regions: Vec<String>,
    /// Buckets whose bundles may be deleted; empty: bundle cleanup is off.
    pub bundle_buckets: BTreeSet<String>,
    /// The policy's exclude tags: storage carrying one is kept on purpose.
    pub exclude_tags: BTreeMap<String, Glob>,
    /// Which member accounts' jobs may run (a job names its account).
    pub accounts: AccountScope,
    /// The role the worker assumes in a job's member account.
    pub member_role: String,
}

/// Which accounts' storage the worker may delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccountScope {
    /// Only the deployment's own (jobs name no account).
    #[default]
    Own,
    /// These member accounts (the policy lists them).
    These(BTreeSet<String>),
    /// Any account of the organization but these (the member role gates the rest).
    OrganizationExcept(BTreeSet<String>),
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
    /// The rules of a deployment: the policy's regions (else `default_region`), its
    /// exclude tags, and the bundle buckets configured at deploy time.
    pub fn new(
        policy: &crate::policy::Policy,
        default_region: Option<&str>,
        bundle_buckets: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            regions: policy.regions.clone().unwrap_or_else(|| {
                default_region
                    .map(|r| vec![r.to_string()])
                    .unwrap_or_default()
            }),
            bundle_buckets: bundle_buckets
                .into_iter()
                .map(|b| b.trim().to_string())
                .filter(|b| !b.is_empty())
                .collect(),
            exclude_tags: policy.selection.exclude_tags.clone(),
            member_role: policy.member_role_name.clone(),
            accounts: match &policy.accounts {
                None => AccountScope::Own,
                Some(crate::policy::Accounts::List(ids)) => {
                    AccountScope::These(ids.iter().cloned().collect())
                }
                Some(crate::policy::Accounts::Organization { organization }) => {
                    AccountScope::OrganizationExcept(
                        organization.exclude_accounts.iter().cloned().collect(),
                    )
                }
            },
        }
    }

    /// A job's account must be one the deployment sweeps.
    pub fn check_account(&self, account: Option<&str>) -> Result<(), String> {
        let ok = match (account, &self.accounts) {
            (None, _) => true,
            (Some(_), AccountScope::Own) => false,
            (Some(a), AccountScope::These(ids)) => ids.contains(a),
            (Some(a), AccountScope::OrganizationExcept(excluded)) => !excluded.contains(a),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "account {} is not one this deployment sweeps",
                account.unwrap_or_default()
            ))
        }
    }

    /// A job's region must be one the deployment sweeps.
    pub fn check_region(&self, region: &str) -> Result<(), String> {
        if self.regions.iter().any(|r| r == region) {
            Ok(())
        } else {
            Err(format!(
                "region {region:?} is not among the deployment's regions [{}]",
                self.regions.join(", ")
            ))
        }
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
        WorkerRules {
            regions: vec!["us-east-1".into()],
            bundle_buckets: ["bundles".to_string()].into_iter().collect(),
            exclude_tags: [("retain".to_string(), Glob::new("*"))]
                .into_iter()
                .collect(),
            ..Default::default()
        }
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
            archived: false,
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
    fn a_job_may_name_only_an_account_the_deployment_sweeps() {
        let own = rules();
        assert!(own.check_account(None).is_ok());
        assert!(own.check_account(Some("111122223333")).is_err());
        let listed = WorkerRules {
            accounts: AccountScope::These(["111122223333".to_string()].into()),
            ..rules()
        };
        assert!(listed.check_account(Some("111122223333")).is_ok());
        assert!(listed.check_account(Some("444455556666")).is_err());
        let org = WorkerRules {
            accounts: AccountScope::OrganizationExcept(["444455556666".to_string()].into()),
            ..rules()
        };
        assert!(org.check_account(Some("111122223333")).is_ok());
        assert!(org.check_account(Some("444455556666")).is_err());
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
        assert!(r.check_region("us-east-1").is_ok());
        assert!(r
            .check_region("mars-north-1")
            .unwrap_err()
            .contains("mars-north-1"));
    }
}
