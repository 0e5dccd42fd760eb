//! Auto Scaling: images named by launch configurations.

use std::sync::Arc;

use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::launch_configuration_user;
use crate::model::Usage;

/// The Auto Scaling adapter.
#[derive(Clone, Debug)]
pub struct AutoScaling {
    client: aws_sdk_autoscaling::Client,
    calls: Arc<ApiCalls>,
}

impl AutoScaling {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_autoscaling::Client, calls: Arc<ApiCalls>) -> Self {
        Self { client, calls }
    }

    /// Every launch configuration's image (all pages).
    pub async fn launch_configuration_usage(&self) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut pages = self
            .client
            .describe_launch_configurations()
            .max_records(100)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeLaunchConfigurations");
            let resp = page.map_err(|e| from_sdk("DescribeLaunchConfigurations", e))?;
            for lc in resp.launch_configurations() {
                if let Some(image) = lc.image_id() {
                    usage.add(
                        image,
                        launch_configuration_user(lc.launch_configuration_name().unwrap_or("?")),
                    );
                }
            }
        }
        Ok(usage)
    }
}
