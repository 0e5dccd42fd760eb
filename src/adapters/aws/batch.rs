//! AWS Batch: images named by compute environments.

use std::sync::Arc;

use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::user;
use crate::model::{Usage, UsageKind};

/// The Batch adapter.
#[derive(Clone, Debug)]
pub struct Batch {
    client: aws_sdk_batch::Client,
    calls: Arc<ApiCalls>,
}

impl Batch {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_batch::Client, calls: Arc<ApiCalls>) -> Self {
        Self { client, calls }
    }

    /// Every compute environment's `imageId` and `ec2Configuration[].imageIdOverride`,
    /// and the launch template versions they name (all pages).
    pub async fn compute_environment_usage(&self) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut pages = self
            .client
            .describe_compute_environments()
            .max_results(100)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeComputeEnvironments");
            let resp = page.map_err(|e| from_sdk("DescribeComputeEnvironments", e))?;
            for ce in resp.compute_environments() {
                let name = ce
                    .compute_environment_name()
                    .unwrap_or("compute-environment");
                let Some(res) = ce.compute_resources() else {
                    continue;
                };
                let overrides = res
                    .ec2_configuration()
                    .iter()
                    .filter_map(|c| c.image_id_override());
                // `imageId` is deprecated in favour of `imageIdOverride`, but environments
                // created with it still launch from it.
                #[allow(deprecated)]
                let own = res.image_id();
                for image in own.into_iter().chain(overrides) {
                    usage.add(image, user(UsageKind::BatchComputeEnvironment, name));
                }
                if let Some(lt) = res.launch_template() {
                    let t = lt.launch_template_id().or(lt.launch_template_name());
                    if let Some(t) = t {
                        usage.add_template_reference(t, lt.version());
                    }
                }
            }
        }
        Ok(usage)
    }
}
