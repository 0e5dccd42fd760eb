//! Auto Scaling: images named by launch configurations.

use std::sync::Arc;

use crate::awscli::launch_configuration_user;
use crate::error::{from_sdk, AwsError};
use crate::model::Usage;
use crate::report::ApiCalls;

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
        let mut token: Option<String> = None;
        loop {
            self.calls.record("DescribeLaunchConfigurations");
            let resp = self
                .client
                .describe_launch_configurations()
                .max_records(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeLaunchConfigurations", e))?;
            for lc in resp.launch_configurations() {
                if let Some(image) = lc.image_id() {
                    usage.add(
                        image,
                        launch_configuration_user(lc.launch_configuration_name().unwrap_or("?")),
                    );
                }
            }
            token = resp
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(usage);
            }
        }
    }
}
