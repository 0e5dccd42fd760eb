//! Recycle Bin: the region's retention rules for AMIs and EBS snapshots.

use std::sync::Arc;

use aws_sdk_rbin::types::{ResourceTag, ResourceType, RuleStatus};

use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::recycle_bin::{BinResource, BinRule, BinRules, TagMatch};

/// The Recycle Bin adapter.
#[derive(Clone, Debug)]
pub struct Rbin {
    client: aws_sdk_rbin::Client,
    calls: Arc<ApiCalls>,
}

fn matches(tags: &[ResourceTag]) -> Vec<TagMatch> {
    tags.iter()
        .map(|t| TagMatch {
            key: t.resource_tag_key().to_string(),
            value: t.resource_tag_value().map(str::to_string),
        })
        .collect()
}

impl Rbin {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_rbin::Client, calls: Arc<ApiCalls>) -> Self {
        Self { client, calls }
    }

    /// Every rule for AMIs and for snapshots (`ListRules`, all pages, then `GetRule` for
    /// each: only it carries the tags and the status). Rules not yet `available` (a new
    /// account's first rule takes a while) retain nothing and are left out.
    pub async fn rules(&self) -> Result<BinRules, AwsError> {
        let mut out = Vec::new();
        for (kind, resource) in [
            (ResourceType::Ec2Image, BinResource::Image),
            (ResourceType::EbsSnapshot, BinResource::Snapshot),
        ] {
            let mut pages = self
                .client
                .list_rules()
                .resource_type(kind)
                .max_results(100)
                .into_paginator()
                .send();
            let mut ids = Vec::new();
            while let Some(page) = pages.next().await {
                self.calls.record("ListRules");
                let resp = page.map_err(|e| from_sdk("ListRules", e))?;
                ids.extend(
                    resp.rules()
                        .iter()
                        .filter_map(|r| r.identifier().map(str::to_string)),
                );
            }
            for id in ids {
                self.calls.record("GetRule");
                let r = self
                    .client
                    .get_rule()
                    .identifier(&id)
                    .send()
                    .await
                    .map_err(|e| from_sdk("GetRule", e))?;
                if r.status() != Some(&RuleStatus::Available) {
                    continue;
                }
                let Some(period) = r.retention_period() else {
                    return Err(AwsError::new(
                        "GetRule",
                        "MissingRetentionPeriod",
                        format!("rule {id} has no retention period"),
                    ));
                };
                out.push(BinRule {
                    id,
                    resource,
                    retention_days: u32::try_from(period.retention_period_value()).unwrap_or(0),
                    resource_tags: matches(r.resource_tags()),
                    exclude_tags: matches(r.exclude_resource_tags()),
                    locked: r.lock_state().is_some_and(|s| s.as_str() == "locked"),
                });
            }
        }
        Ok(BinRules(out))
    }
}
