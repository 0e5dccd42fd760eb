//! What the cleanup worker checks before it deletes anything a queue message asks for.
//! Pure: the facts come from batched calls per message batch (`app/worker.rs`); this
//! module checks the job's account and region and asks [`crate::storage::fate`], the rule
//! the plan and the reconciliation use too.
//!
//! A queue message is not trusted: anyone who can send to the queue (or a bug) could name
//! any snapshot or bundle. So a job runs only when AWS's own records say it is what the
//! sweep would have queued: the storage is the account's, nobody else owns it, the
//! policy does not keep it, it demonstrably belonged to the job's image, and that image is
//! gone. A job that fails is rejected with the reason: nothing is deleted.

use std::collections::{BTreeMap, BTreeSet};

use crate::jobs::{CleanupJob, JobTarget};
use crate::mandate::Mandate;
use crate::model::{Manifest, Snapshot, Timestamp};
use crate::policy::{Cleanup, Glob};
use crate::recycle_bin::DELETE_AFTER;
use crate::storage::{fate, Facts, Fate, Item, Kind, Rules, StorageReason, STORAGE_MARK};

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
    /// Every rule's exclude tags: storage carrying one is kept on purpose (the job's
    /// image is gone, so whichever rule's tag it carries counts).
    pub exclude_tags: Vec<BTreeMap<String, Glob>>,
    /// The role the worker assumes in a job's member account.
    pub member_role: String,
    /// The policy's `cleanup` switches (snapshots, bundles, orphans and their minimum age).
    pub cleanup: Cleanup,
    /// The policy's `usage.launch_template_versions`: which versions' mappings keep a
    /// snapshot.
    pub templates: crate::policy::TemplateVersions,
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
            exclude_tags: policy.every_exclude_tags().into_iter().cloned().collect(),
            cleanup: policy.cleanup.clone(),
            templates: policy.usage.launch_template_versions,
            member_role: policy.member_role_name.clone(),
        }
    }

    /// The rules a sweep verifies the jobs it runs in process by: the same storage rules
    /// as its deployment's worker ([`WorkerRules::new`]), with the run's own mandate as the
    /// ceiling (its jobs carry it and never leave the run) and `account`, the one it
    /// sweeps (`None`: its own), as the only member it admitted.
    pub fn in_process(
        policy: &crate::policy::Policy,
        mandate: &Mandate,
        account: Option<&str>,
        bundle_buckets: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            ceiling: mandate.clone(),
            members: account.map(|a| BTreeSet::from([a.to_string()])),
            ..Self::new(policy, None, bundle_buckets)
        }
    }

    /// Where a job may act: the mandate it carries within the ceiling, its account and
    /// region admitted by both; a bundle job never names a member account (bundle buckets
    /// are the hub's), and no dry run ever queues a job.
    pub fn check_place(&self, job: &CleanupJob) -> Result<(), String> {
        if job.mandate.as_ref().is_some_and(|m| m.dry_run) {
            return Err("its mandate is a dry run, which queues no jobs".into());
        }
        if self.ceiling.dry_run {
            // With or without a mandate: a dry-run deployment (ForceDryRun, or the
            // policy's dry_run) runs no job, so the brake holds for jobs already queued.
            return Err(
                "the deployment is a dry run (ForceDryRun or the policy's dry_run); \
                 no job runs"
                    .into(),
            );
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

    /// The storage rules the worker applies: the policy's `cleanup` switches and exclude
    /// tags, and the deployment's bundle buckets.
    pub fn storage_rules(&self) -> Rules<'_> {
        Rules {
            cleanup: &self.cleanup,
            exclude_tags: self.exclude_tags.iter().collect(),
            bundle_buckets: Some(&self.bundle_buckets),
        }
    }

    /// A snapshot job: `found` is the snapshot as `DescribeSnapshots --owner-ids self`
    /// reports it (`None`: not the account's, or gone); `facts` who still needs it (the
    /// job's image among the registered ones if it still is). It runs only if
    /// [`crate::storage::fate`] clears it.
    pub fn snapshot_job(
        &self,
        snapshot_id: &str,
        image_id: &str,
        found: Option<&Snapshot>,
        facts: &Facts,
        now: Timestamp,
    ) -> Verdict {
        let Some(s) = found else {
            return Verdict::Gone;
        };
        let item = Item {
            kind: Kind::Snapshot,
            image_id,
            mapped: false,
            tags: &s.tags,
            tags_known: true,
            description: &s.description,
            born: s.start_time,
            bucket: None,
        };
        verdict(
            snapshot_id,
            image_id,
            fate(&item, facts, &self.storage_rules(), now),
        )
    }

    /// A bundle job: `manifest` is the manifest object (its tags, and `LastModified` where
    /// read), `facts` the registered images launching from it and the job's image if it is
    /// registered or in the Recycle Bin. The bucket must be one of the deployment's.
    pub fn bundle_job(
        &self,
        bucket: &str,
        manifest_key: &str,
        image_id: &str,
        manifest: &Manifest,
        facts: &Facts,
        now: Timestamp,
    ) -> Verdict {
        let target = format!("s3://{bucket}/{manifest_key}");
        if self.bundle_buckets.is_empty() {
            return Verdict::Reject(format!(
                "{target}: {}: bundle cleanup is off in this deployment; nothing was deleted",
                StorageReason::BucketNotConfigured
            ));
        }
        let item = Item {
            kind: Kind::Bundle,
            image_id,
            mapped: false,
            tags: &manifest.tags,
            tags_known: true,
            description: "",
            born: manifest.last_modified,
            bucket: Some(bucket),
        };
        verdict(
            &target,
            image_id,
            fate(&item, facts, &self.storage_rules(), now),
        )
    }
}

/// Proceed when the storage rule clears the job; else a rejection that starts with the
/// rule's reason name (the same name the plan and the reconciliation give).
fn verdict(target: &str, image_id: &str, fate: Fate) -> Verdict {
    let why = match fate {
        Fate::Delete => return Verdict::Proceed,
        Fate::Retain(r) => format!("{r}: {}", explain(r, image_id)),
        Fate::DeferUntil(t, r) => format!(
            "{r}: {}; its deletion is deferred until {}",
            explain(r, image_id),
            crate::time::format_instant(t)
        ),
    };
    Verdict::Reject(format!("{target}: {why}; nothing was deleted"))
}

/// A sentence for each reason, as the dead-letter queue's `reason` attribute carries it.
fn explain(r: StorageReason, image_id: &str) -> String {
    use StorageReason as R;
    match r {
        R::BackupManaged => "AWS Backup manages it".into(),
        R::DlmManaged => "a Data Lifecycle Manager policy owns it".into(),
        R::ExcludedByTag => "it carries one of the policy's exclude tags".into(),
        R::UnreadableTag => format!(
            "its {STORAGE_MARK} or {DELETE_AFTER} tag is not in the form ami-sweeper writes"
        ),
        R::UnrecognisedLocation => "the manifest location is not understood".into(),
        R::BucketNotConfigured => "the bucket is not among the deployment's bundle buckets".into(),
        R::NotTiedToImage => format!(
            "nothing ties it to {image_id} (no {STORAGE_MARK} tag naming it, and no \
             description EC2 wrote for it)"
        ),
        R::ImageRegistered => format!("its image {image_id} is still registered"),
        R::UsedByOtherImage => "another registered image still uses it".into(),
        R::NamedByLaunchTemplate => "a launch template version maps it".into(),
        R::CleanupDisabled => "the policy's cleanup switch for it is off".into(),
        R::OrphansOff => "ami-sweeper did not mark it and the policy has no cleanup.orphans".into(),
        R::BucketNotPrivate => "ami-sweeper did not mark it and its bucket is not in \
                                cleanup.private_bundle_buckets: another account may still \
                                register images from it"
            .into(),
        R::TooYoung => "ami-sweeper did not mark it and it is younger than \
                        cleanup.orphans.min_age_days"
            .into(),
        R::ImageInRecycleBin => {
            "an AMI that needs it can still be restored from the Recycle Bin".into()
        }
        R::DeferredForRecycleBin => format!("its {DELETE_AFTER} instant is still ahead"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recycle_bin::DELETE_AFTER;

    fn rules() -> WorkerRules {
        let policy = crate::policy::Policy::from_json(
            r#"{"dry_run": false, "retention": {"min_age_days": 1}, "selection": {"exclude_tags": {"retain": "*"}}}"#,
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
            archived: false,
        }
    }

    fn reason_of(v: Verdict) -> String {
        match v {
            Verdict::Reject(why) => {
                assert!(why.ends_with("nothing was deleted"), "{why}");
                why.split(": ").nth(1).unwrap().to_string()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forged_or_premature_snapshot_jobs_are_refused_with_the_storage_rules_reason() {
        let r = rules();
        let created = "Created by CreateImage(i-1) for ami-1";
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let none = Facts::default();
        let job = |s: &Snapshot, f: &Facts| r.snapshot_job("snap-1", "ami-1", Some(s), f, now);
        let mark = (STORAGE_MARK, "ami-1");
        assert_eq!(job(&snap("", &[mark]), &none), Verdict::Proceed);
        assert_eq!(
            r.snapshot_job("snap-1", "ami-1", None, &none, now),
            Verdict::Gone
        );
        let cases: Vec<(&str, Snapshot, Facts)> = vec![
            (
                "not_tied_to_image",
                snap("my manual backup", &[]),
                none.clone(),
            ),
            (
                "not_tied_to_image",
                snap("", &[(STORAGE_MARK, "ami-2")]),
                none.clone(),
            ),
            (
                "image_registered",
                snap("", &[mark]),
                Facts {
                    registered: vec!["ami-1".into()],
                    ..Facts::default()
                },
            ),
            (
                "used_by_other_image",
                snap("", &[mark]),
                Facts {
                    registered: vec!["ami-2".into()],
                    ..Facts::default()
                },
            ),
            (
                "named_by_launch_template",
                snap("", &[mark]),
                Facts {
                    templates: vec!["lt-1 v1".into()],
                    ..Facts::default()
                },
            ),
            (
                "excluded_by_tag",
                snap("", &[mark, ("retain", "x")]),
                none.clone(),
            ),
            (
                "backup_managed",
                snap("", &[mark, ("aws:backup:source-resource", "x")]),
                none.clone(),
            ),
            (
                "dlm_managed",
                snap("", &[mark, ("aws:dlm:lifecycle-policy-id", "p")]),
                none.clone(),
            ),
            // A foreign snapshot while the policy has no orphans.
            ("orphans_off", snap(created, &[]), none.clone()),
            // A forged or early job for a snapshot whose AMI is in the Recycle Bin.
            (
                "image_in_recycle_bin",
                snap("", &[mark]),
                Facts {
                    in_bin: vec![(
                        "ami-1".into(),
                        crate::time::parse_instant("2026-12-03T00:00:00Z"),
                    )],
                    ..Facts::default()
                },
            ),
            (
                "deferred_for_recycle_bin",
                snap("", &[mark, (DELETE_AFTER, "2026-12-03T00:00:00Z")]),
                none.clone(),
            ),
        ];
        for (want, s, f) in &cases {
            assert_eq!(reason_of(job(s, f)), *want, "{s:?} {f:?}");
        }
        let due = snap("", &[mark, (DELETE_AFTER, "2026-11-25T00:00:00Z")]);
        assert_eq!(job(&due, &none), Verdict::Proceed);
        // cleanup.snapshots: false, and foreign orphans with the policy's opt-in and age.
        let off = WorkerRules {
            cleanup: Cleanup {
                snapshots: false,
                ..Cleanup::default()
            },
            ..rules()
        };
        let v = off.snapshot_job("snap-1", "ami-1", Some(&snap("", &[mark])), &none, now);
        assert_eq!(reason_of(v), "cleanup_disabled");
        let orphans = |days| WorkerRules {
            cleanup: Cleanup {
                orphans: Some(crate::policy::Orphans { min_age_days: days }),
                ..Cleanup::default()
            },
            ..rules()
        };
        let mut old = snap(created, &[]);
        old.start_time = crate::time::parse_instant("2026-10-01T00:00:00Z");
        let job_with = |w: &WorkerRules| w.snapshot_job("snap-1", "ami-1", Some(&old), &none, now);
        assert_eq!(job_with(&orphans(30)), Verdict::Proceed);
        assert_eq!(reason_of(job_with(&orphans(90))), "too_young");
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
        // A dry-run deployment (ForceDryRun as a brake, or the policy's) runs no job, with
        // a mandate or without one (a job queued before mandates existed).
        let mut braked = org.clone();
        braked.ceiling.dry_run = true;
        let legacy = job(Some("111122223333"), "us-east-1");
        assert!(org.check_place(&legacy).is_ok());
        assert!(braked.check_place(&legacy).unwrap_err().contains("dry run"));
    }

    #[test]
    fn bundle_jobs_are_tied_to_their_image_and_cleared_by_the_same_rule() {
        let r = rules();
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let manifest = |tags: &[(&str, &str)], modified: &str| Manifest {
            bucket: "bundles".into(),
            key: "a.manifest.xml".into(),
            last_modified: crate::time::parse_instant(modified),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let marked = manifest(&[(STORAGE_MARK, "ami-1")], "2026-11-25T00:00:00Z");
        let none = Facts::default();
        let job = |w: &WorkerRules, bucket: &str, m: &Manifest, f: &Facts| {
            w.bundle_job(bucket, "a.manifest.xml", "ami-1", m, f, now)
        };
        assert_eq!(job(&r, "bundles", &marked, &none), Verdict::Proceed);
        let launched = Facts {
            registered: vec!["ami-2".into()],
            ..Facts::default()
        };
        assert_eq!(
            reason_of(job(&r, "bundles", &marked, &launched)),
            "used_by_other_image"
        );
        let own = Facts {
            registered: vec!["ami-1".into()],
            ..Facts::default()
        };
        assert_eq!(
            reason_of(job(&r, "bundles", &marked, &own)),
            "image_registered"
        );
        assert_eq!(
            reason_of(job(&r, "other", &marked, &none)),
            "bucket_not_configured"
        );
        // Uploaded, not registered yet (or a foreign bundle) with orphans off.
        let unmarked = manifest(&[], "2026-11-25T00:00:00Z");
        assert_eq!(
            reason_of(job(&r, "bundles", &unmarked, &none)),
            "orphans_off"
        );
        let excluded = manifest(
            &[(STORAGE_MARK, "ami-1"), ("retain", "1")],
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(
            reason_of(job(&r, "bundles", &excluded, &none)),
            "excluded_by_tag"
        );
        let other = manifest(&[(STORAGE_MARK, "ami-9")], "2026-01-01T00:00:00Z");
        assert_eq!(
            reason_of(job(&r, "bundles", &other, &none)),
            "not_tied_to_image"
        );
        // A foreign bundle, old enough, with orphans on: only in a bucket declared private.
        let orphans = |private: &[&str]| WorkerRules {
            cleanup: Cleanup {
                orphans: Some(crate::policy::Orphans { min_age_days: 30 }),
                private_bundle_buckets: private.iter().map(|b| b.to_string()).collect(),
                ..Cleanup::default()
            },
            ..rules()
        };
        let old = manifest(&[], "2026-01-01T00:00:00Z");
        assert_eq!(
            reason_of(job(&orphans(&[]), "bundles", &old, &none)),
            "bucket_not_private"
        );
        assert_eq!(
            job(&orphans(&["bundles"]), "bundles", &old, &none),
            Verdict::Proceed
        );
        let off = WorkerRules {
            bundle_buckets: BTreeSet::new(),
            ..rules()
        };
        match job(&off, "bundles", &marked, &none) {
            Verdict::Reject(why) => assert!(why.contains("bundle cleanup is off"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
