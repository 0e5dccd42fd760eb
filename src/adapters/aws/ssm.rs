//! SSM: resolves `resolve:ssm:` image ids of launch templates.

use std::sync::Arc;

use crate::adapters::aws::ec2::SsmRef;
use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::ssm_parameter_user;
use crate::model::{Usage, UsageRef};

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
        let values = self.values(refs.iter().map(|r| &r.parameter)).await?;
        for r in refs {
            match &values[&r.parameter] {
                Some(image) => usage.add_template_version(image.clone(), r.user),
                None => warnings.push(format!(
                    "{} uses resolve:ssm:{}, which does not exist",
                    r.user.user().id,
                    r.parameter
                )),
            }
        }
        Ok((usage, warnings))
    }

    /// As [`Ssm::resolve_image_ids`], for users other than launch template versions (a
    /// CloudFormation template's `{{resolve:ssm:…}}`): each parameter holding an AMI id
    /// keeps that image for its user.
    pub async fn resolve_references(
        &self,
        refs: Vec<(String, UsageRef)>,
    ) -> Result<(Usage, Vec<String>), AwsError> {
        let mut usage = Usage::new();
        let mut warnings = Vec::new();
        let values = self.values(refs.iter().map(|(p, _)| p)).await?;
        for (parameter, user) in refs {
            match &values[&parameter] {
                Some(v) => {
                    for image in crate::fields::image_ids_in(v) {
                        usage.add(image, user.clone());
                    }
                }
                None => warnings.push(format!(
                    "{} uses resolve:ssm:{parameter}, which does not exist",
                    user.id
                )),
            }
        }
        Ok((usage, warnings))
    }

    /// Each named parameter's value, read once (`None`: it does not exist). Any other
    /// failure is an error.
    async fn values<'a>(
        &self,
        names: impl Iterator<Item = &'a String>,
    ) -> Result<std::collections::BTreeMap<String, Option<String>>, AwsError> {
        let mut values = std::collections::BTreeMap::new();
        for name in names {
            if values.contains_key(name) {
                continue;
            }
            self.calls.record("GetParameter");
            let value = match self.client.get_parameter().name(name).send().await {
                Ok(o) => o.parameter().and_then(|p| p.value()).map(str::to_string),
                Err(e) => {
                    let e = from_sdk("GetParameter", e);
                    if !e.is("ParameterNotFound") {
                        return Err(e);
                    }
                    None
                }
            };
            values.insert(name.clone(), value);
        }
        Ok(values)
    }

    /// Parameters that name images: every `aws:ec2:image` parameter (found by listing
    /// the store's metadata, then reading their values ten at a time), and `String`
    /// parameters under `paths` (recursively) whose value is an AMI id.
    pub async fn image_parameters(&self, paths: &[String]) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut typed = Vec::new();
        let mut pages = self
            .client
            .describe_parameters()
            .max_results(50)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeParameters");
            let resp = page.map_err(|e| from_sdk("DescribeParameters", e))?;
            typed.extend(
                resp.parameters()
                    .iter()
                    .filter(|p| p.data_type() == Some("aws:ec2:image"))
                    .filter_map(|p| p.name().map(str::to_string)),
            );
        }
        let mut found = Vec::new();
        for names in typed.chunks(10) {
            self.calls.record("GetParameters");
            let resp = self
                .client
                .get_parameters()
                .set_names(Some(names.to_vec()))
                .send()
                .await
                .map_err(|e| from_sdk("GetParameters", e))?;
            found.extend(resp.parameters().iter().cloned());
        }
        for path in paths {
            let mut pages = self
                .client
                .get_parameters_by_path()
                .path(path)
                .recursive(true)
                .max_results(10)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                self.calls.record("GetParametersByPath");
                let resp = page.map_err(|e| from_sdk("GetParametersByPath", e))?;
                found.extend(resp.parameters().iter().cloned());
            }
        }
        for p in found {
            let (Some(name), Some(value)) = (p.name(), p.value()) else {
                continue;
            };
            let kind = p.r#type().map(|t| t.as_str());
            if let Some(u) = ssm_parameter_user(name, p.data_type(), kind, value, paths) {
                usage.add(value, u);
            }
        }
        Ok(usage)
    }
}
