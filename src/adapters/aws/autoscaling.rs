//! Auto Scaling: images named by launch configurations, and the launch template versions
//! groups launch.

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

    /// The launch template versions Auto Scaling groups launch: the group's own template,
    /// its mixed-instances policy's, and every override naming a different one (all pages).
    /// They matter for `usage.launch_template_versions: "referenced"`.
    pub async fn group_template_references(&self) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut pages = self
            .client
            .describe_auto_scaling_groups()
            .max_records(100)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeAutoScalingGroups");
            let resp = page.map_err(|e| from_sdk("DescribeAutoScalingGroups", e))?;
            for g in resp.auto_scaling_groups() {
                let mixed = g.mixed_instances_policy().and_then(|m| m.launch_template());
                let specs = g
                    .launch_template()
                    .into_iter()
                    .chain(mixed.and_then(|l| l.launch_template_specification()))
                    .chain(
                        mixed
                            .map(|l| l.overrides())
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|o| o.launch_template_specification()),
                    );
                for spec in specs {
                    let t = spec.launch_template_id().or(spec.launch_template_name());
                    if let Some(t) = t {
                        usage.add_template_reference(t, spec.version());
                    }
                }
            }
        }
        Ok(usage)
    }
}
