//! SSM: resolves `resolve:ssm:` image ids of launch templates.

use std::sync::Arc;

use crate::adapters::aws::ec2::SsmRef;
use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::model::Usage;

/// The SSM adapter.
#[derive(Clone, Debug)]
pub struct Ssm {
    client: aws_sdk_ssm::Client,
    calls: Arc<ApiCalls>,
}

impl Ssm {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_ssm::Client, calls: Arc<ApiCalls>) -> Self {
        Self { client, calls }
    }

    /// A parameter's value, decrypted: where the Lambda function reads its policy. Through
    /// this adapter, so the call is counted and its throttling seen like every other.
    pub async fn parameter_value(&self, name: &str) -> Result<String, AwsError> {
        self.calls.record("GetParameter");
        let out = self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| from_sdk("GetParameter", e))?;
        Ok(out
            .parameter()
            .and_then(|p| p.value())
            .unwrap_or_default()
            .to_string())
    }

    /// Reads each parameter once and records its image as used. A parameter that does
    /// not exist names no image (the template cannot launch): that is a warning. Any
    /// other failure is an error: usage would be incomplete, and the sweep must not act.
    pub async fn resolve_image_ids(
        &self,
        refs: Vec<SsmRef>,
    ) -> Result<(Usage, Vec<String>), AwsError> {
        let mut usage = Usage::new();
        let mut warnings = Vec::new();
        let mut values: std::collections::BTreeMap<String, Option<String>> =
            std::collections::BTreeMap::new();
        for r in &refs {
            if values.contains_key(&r.parameter) {
                continue;
            }
            self.calls.record("GetParameter");
            let value = match self.client.get_parameter().name(&r.parameter).send().await {
                Ok(o) => o.parameter().and_then(|p| p.value()).map(str::to_string),
                Err(e) => {
                    let e = from_sdk("GetParameter", e);
                    if !e.is("ParameterNotFound") {
                        return Err(e);
                    }
                    None
                }
            };
            values.insert(r.parameter.clone(), value);
        }
        for r in refs {
            match &values[&r.parameter] {
                Some(image) => usage.add(image.clone(), r.user),
                None => warnings.push(format!(
                    "{} uses resolve:ssm:{}, which does not exist",
                    r.user.id, r.parameter
                )),
            }
        }
        Ok((usage, warnings))
    }
}
