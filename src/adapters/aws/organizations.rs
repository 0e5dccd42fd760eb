//! AWS Organizations: the accounts under the policy's organizational units.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_sdk_organizations::types::AccountStatus;

use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};

/// The Organizations adapter (in the hub, the management or a delegated account).
#[derive(Clone, Debug)]
pub struct Organizations {
    client: aws_sdk_organizations::Client,
    calls: Arc<ApiCalls>,
}

impl Organizations {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_organizations::Client, calls: Arc<ApiCalls>) -> Self {
        Self { client, calls }
    }

    /// The active accounts under `ou_ids` and every child OU below them (all pages),
    /// without `exclude`, sorted.
    pub async fn accounts_under(
        &self,
        ou_ids: &[String],
        exclude: &[String],
    ) -> Result<Vec<String>, AwsError> {
        let mut found = BTreeSet::new();
        let mut parents: Vec<String> = ou_ids.to_vec();
        let mut seen = BTreeSet::new();
        while let Some(parent) = parents.pop() {
            if !seen.insert(parent.clone()) {
                continue;
            }
            let mut pages = self
                .client
                .list_accounts_for_parent()
                .parent_id(&parent)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                self.calls.record("ListAccountsForParent");
                let resp = page.map_err(|e| from_sdk("ListAccountsForParent", e))?;
                found.extend(
                    resp.accounts()
                        .iter()
                        .filter(|a| a.status().is_none_or(|s| *s == AccountStatus::Active))
                        .filter_map(|a| a.id().map(str::to_string)),
                );
            }
            let mut pages = self
                .client
                .list_organizational_units_for_parent()
                .parent_id(&parent)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                self.calls.record("ListOrganizationalUnitsForParent");
                let resp = page.map_err(|e| from_sdk("ListOrganizationalUnitsForParent", e))?;
                parents.extend(
                    resp.organizational_units()
                        .iter()
                        .filter_map(|o| o.id().map(str::to_string)),
                );
            }
        }
        Ok(found.into_iter().filter(|a| !exclude.contains(a)).collect())
    }
}
