//! AWS's reference check (`DescribeImageReferences`) on the condemned images, before any
//! of them is touched: a reference keeps the image (`in_use`, with the resource's ARN in
//! `used_by`). Where the API does not exist (a region or partition without it) the
//! account's own sources decide, with Image Builder recipes added, and the report says so
//! once. Where it is denied, the region stops unless the policy makes the check optional.

use std::collections::BTreeSet;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::app::ratelimit::{Pacer, STOPPED, THROTTLED};
use crate::error::AwsError;
use crate::inventory::Inventory;
use crate::policy::{AwsReferences, Policy, TemplateVersions};
use crate::ports::{ReferenceCheck, REFERENCE_IDS_PER_CALL};

/// Reference-check calls in flight at once: the check is read-only, and a round trip each
/// made one after another would delay the first deregistration by as many.
const CALLS_AT_ONCE: usize = 8;

/// Error codes meaning the action does not exist where it was called.
const UNAVAILABLE: [&str; 4] = [
    "InvalidAction",
    "UnsupportedOperation",
    "UnknownOperationException",
    "NotImplemented",
];
/// Error codes meaning the caller may not use it.
const DENIED: [&str; 3] = [
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
];

/// How the reference check went in a region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Nothing was condemned: nothing to ask.
    #[default]
    NotNeeded,
    /// AWS answered for every condemned image.
    Checked,
    /// The API does not exist here: the own sources (and Image Builder recipes) decided.
    Unavailable,
    /// The check was denied and the policy makes it optional: the own sources decided.
    DeniedOptional,
}

/// What the reference check did in a region (the report's `reference_check`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// How it went.
    pub status: CheckStatus,
    /// Condemned images AWS was asked about.
    pub images_checked: usize,
    /// References found (each keeps its image).
    pub references_found: usize,
}

/// The check's state across the executor's rounds (each round asks only about images
/// newly condemned).
pub struct References {
    optional: bool,
    templates: bool,
    asked: BTreeSet<String>,
    /// What it did so far.
    pub report: CheckReport,
}

impl References {
    /// The check as the policy configures it. Launch templates are asked about only when
    /// every version counts: otherwise the policy judges their versions itself.
    pub fn new(policy: &Policy) -> Self {
        Self {
            optional: policy.usage.aws_references == AwsReferences::Optional,
            templates: policy.usage.launch_template_versions == TemplateVersions::All,
            asked: BTreeSet::new(),
            report: CheckReport::default(),
        }
    }

    /// Asks about the images of `condemned` not asked about before, ten per call and
    /// [`CALLS_AT_ONCE`] calls at a time, under the Describe bucket; adds what references them to the inventory's usage. `Ok(true)`
    /// when the inventory changed (the plan must be made again), `Err` when the region must
    /// stop (nothing more may be deregistered).
    pub async fn check<A: ReferenceCheck>(
        &mut self,
        account: &A,
        describe: &Pacer,
        region: &str,
        condemned: &[String],
        inventory: &mut Inventory,
    ) -> Result<bool, String> {
        if matches!(
            self.report.status,
            CheckStatus::Unavailable | CheckStatus::DeniedOptional
        ) {
            return Ok(false);
        }
        let new: Vec<String> = condemned
            .iter()
            .filter(|id| !self.asked.contains(*id))
            .cloned()
            .collect();
        let templates = self.templates;
        // The calls go out together (the pacer still meters them); the answers are taken
        // in order, so the first failure decides as if they had been made one by one.
        let answers: Vec<_> = stream::iter(new.chunks(REFERENCE_IDS_PER_CALL))
            .map(|ids| async move {
                let ask = || account.image_references(ids, templates);
                (ids, describe.call("DescribeImageReferences", ask).await)
            })
            .buffered(CALLS_AT_ONCE)
            .collect()
            .await;
        let mut found = 0;
        for (ids, answer) in answers {
            match answer {
                Ok(refs) => {
                    found += refs.len();
                    for (image, user) in refs {
                        inventory.usage.add(image, user);
                    }
                    self.asked.extend(ids.iter().cloned());
                    self.report.images_checked += ids.len();
                    self.report.status = CheckStatus::Checked;
                }
                // The run stopped: every image is held before its mark (a stop is for
                // good), so none of the unchecked is touched.
                Err(e) if e.is(STOPPED) || e.is(THROTTLED) => break,
                Err(e) => return self.fall_back(e, account, region, inventory).await,
            }
        }
        self.report.references_found += found;
        Ok(found > 0)
    }

    /// The check failed: unavailable (or denied, when optional) → the own sources plus
    /// Image Builder recipes decide, said once; anything else stops the region.
    async fn fall_back<A: ReferenceCheck>(
        &mut self,
        e: AwsError,
        account: &A,
        region: &str,
        inventory: &mut Inventory,
    ) -> Result<bool, String> {
        let code = e.code.as_deref().unwrap_or_default();
        let status = if UNAVAILABLE.contains(&code) {
            CheckStatus::Unavailable
        } else if DENIED.contains(&code) && self.optional {
            CheckStatus::DeniedOptional
        } else if DENIED.contains(&code) {
            return Err(format!(
                "AWS's reference check was denied, nothing more was deregistered \
                 (allow ec2:DescribeImageReferences, or set usage.aws_references to \
                 \"optional\"): {e}"
            ));
        } else {
            return Err(format!(
                "AWS's reference check failed, nothing more was deregistered: {e}"
            ));
        };
        let recipes = account
            .recipe_parents()
            .await
            .map_err(|e| format!("a usage source failed, nothing more was deregistered: {e}"))?;
        inventory.usage.extend(recipes);
        inventory.warnings.push(format!(
            "{region}: AWS's reference check (DescribeImageReferences) {}: ami-sweeper's own \
             usage sources decided, Image Builder recipes included ({e})",
            match status {
                CheckStatus::Unavailable => "is not available here",
                _ => "was denied and is optional",
            }
        ));
        self.report.status = status;
        Ok(true)
    }
}
