//! Cleanup jobs: what the sweep queues after a deregistration and the worker executes.
//! Plain versioned JSON, so that a queue message outlives the code that wrote it.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::mandate::Mandate;

/// The job format version this build writes and reads.
pub const JOB_VERSION: u32 = 1;

/// A queue message that is not a job this build runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Not a cleanup job's JSON.
    #[error("malformed cleanup job: {0}")]
    Malformed(String),
    /// Another format version: rejected, not guessed at.
    #[error("cleanup job version {0} is not supported (this build reads {JOB_VERSION})")]
    Version(u32),
}

/// One unit of cleanup. Read by hand (serde's `flatten` would drop unknown keys): a key
/// no job of its `kind` has is refused with its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CleanupJob {
    /// Format version; jobs of another version are rejected, not guessed at.
    pub version: u32,
    /// Region of the image and its storage.
    pub region: String,
    /// The member account whose storage it is (an organization sweep); `None`: the
    /// deployment's own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The deregistered image the storage belonged to.
    pub image_id: String,
    /// What to delete.
    #[serde(flatten)]
    pub target: JobTarget,
    /// The mandate of the run that queued it: the worker runs it only within its own
    /// ceiling (the same policy, no more accounts, regions or stages). Jobs queued before
    /// mandates existed have none: they are verified as any job is, nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandate: Option<Mandate>,
}

/// What a job deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobTarget {
    /// `DeleteSnapshot`.
    DeleteSnapshot {
        /// `snap-...`.
        snapshot_id: String,
    },
    /// The manifest and exactly the parts it lists.
    DeleteBundle {
        /// Bucket.
        bucket: String,
        /// Manifest key.
        manifest_key: String,
    },
}

/// What kind of storage a job deletes, as reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// An EBS snapshot.
    DeleteSnapshot,
    /// An instance-store bundle.
    DeleteBundle,
}

/// A job as written: the fields of every kind side by side, unknown keys refused; the
/// kind's own fields are then checked against `kind` ([`CleanupJob`]'s `Deserialize`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireJob {
    version: u32,
    region: String,
    #[serde(default)]
    account: Option<String>,
    image_id: String,
    kind: JobKind,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    manifest_key: Option<String>,
    #[serde(default)]
    mandate: Option<Mandate>,
}

/// The fields every kind of job has.
const JOB_FIELDS: [&str; 6] = [
    "version", "region", "account", "image_id", "kind", "mandate",
];

impl<'de> Deserialize<'de> for CleanupJob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let w = WireJob::deserialize(d)?;
        let given = [
            ("snapshot_id", w.snapshot_id.is_some()),
            ("bucket", w.bucket.is_some()),
            ("manifest_key", w.manifest_key.is_some()),
        ];
        // The kind's own fields (a field of another kind is unknown here), and its target.
        let (own, target): (&[&str], _) = match w.kind {
            JobKind::DeleteSnapshot => (
                &["snapshot_id"],
                w.snapshot_id
                    .map(|snapshot_id| JobTarget::DeleteSnapshot { snapshot_id }),
            ),
            JobKind::DeleteBundle => (
                &["bucket", "manifest_key"],
                w.bucket.zip(w.manifest_key).map(|(bucket, manifest_key)| {
                    JobTarget::DeleteBundle {
                        bucket,
                        manifest_key,
                    }
                }),
            ),
        };
        if let Some((field, _)) = given.iter().find(|(f, g)| *g && !own.contains(f)) {
            let known: Vec<String> = JOB_FIELDS
                .iter()
                .chain(own)
                .map(|f| format!("`{f}`"))
                .collect();
            return Err(D::Error::custom(format_args!(
                "unknown field `{field}`, expected one of {}",
                known.join(", ")
            )));
        }
        let Some(target) = target else {
            let missing = given.iter().find(|(f, g)| !*g && own.contains(f));
            return Err(D::Error::missing_field(missing.map_or("kind", |(f, _)| f)));
        };
        Ok(CleanupJob {
            version: w.version,
            region: w.region,
            account: w.account,
            image_id: w.image_id,
            target,
            mandate: w.mandate,
        })
    }
}

impl JobKind {
    /// The name reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeleteSnapshot => "delete_snapshot",
            Self::DeleteBundle => "delete_bundle",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` keeps the table's column widths working.
        f.pad(self.as_str())
    }
}

impl JobTarget {
    /// The job's kind.
    pub fn kind(&self) -> JobKind {
        match self {
            Self::DeleteSnapshot { .. } => JobKind::DeleteSnapshot,
            Self::DeleteBundle { .. } => JobKind::DeleteBundle,
        }
    }
}

impl CleanupJob {
    /// A job for storage of `image_id` in `region`.
    pub fn new(region: &str, image_id: &str, target: JobTarget) -> Self {
        Self {
            version: JOB_VERSION,
            region: region.to_string(),
            account: None,
            image_id: image_id.to_string(),
            target,
            mandate: None,
        }
    }

    /// Serializes to the queue's message body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("jobs serialize")
    }

    /// Parses a message body; the error says what is wrong with it.
    pub fn from_json(body: &str) -> Result<Self, JobError> {
        let job: CleanupJob =
            crate::strict::from_str(body).map_err(|e| JobError::Malformed(e.to_string()))?;
        if job.version != JOB_VERSION {
            return Err(JobError::Version(job.version));
        }
        Ok(job)
    }

    /// A short label for reports: the snapshot id or `s3://bucket/key`.
    pub fn target_label(&self) -> String {
        match &self.target {
            JobTarget::DeleteSnapshot { snapshot_id } => snapshot_id.clone(),
            JobTarget::DeleteBundle {
                bucket,
                manifest_key,
            } => format!("s3://{bucket}/{manifest_key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_reject_other_versions() {
        let job = CleanupJob {
            version: JOB_VERSION,
            account: None,
            region: "us-east-1".into(),
            image_id: "ami-1".into(),
            target: JobTarget::DeleteSnapshot {
                snapshot_id: "snap-1".into(),
            },
            mandate: None,
        };
        let text = job.to_json();
        assert_eq!(
            text,
            r#"{"version":1,"region":"us-east-1","image_id":"ami-1","kind":"delete_snapshot","snapshot_id":"snap-1"}"#
        );
        assert_eq!(CleanupJob::from_json(&text).unwrap(), job);
        let v2 = text.replace("\"version\":1", "\"version\":2");
        assert_eq!(
            CleanupJob::from_json(&v2).unwrap_err(),
            JobError::Version(2)
        );
        assert!(CleanupJob::from_json("{}")
            .unwrap_err()
            .to_string()
            .starts_with("malformed"));
    }
}
