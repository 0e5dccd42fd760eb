//! CloudFormation: stacks whose parameters (and, with `usage.cloudformation_templates`,
//! templates) name images.

use std::sync::Arc;

use aws_sdk_cloudformation::types::TemplateStage;

use crate::adapters::aws::meter::{source_error, Meter};
use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::{
    image_ids_in, ssm_dynamic_references, stack_is_live, stack_parameter_images,
    stack_parameter_ssm, stack_user,
};
use crate::model::{Usage, UsageRef};

/// The CloudFormation adapter.
#[derive(Clone, Debug)]
pub struct CloudFormation {
    client: aws_sdk_cloudformation::Client,
    /// The same client without the SDK's retries, for reads under a meter.
    paced: aws_sdk_cloudformation::Client,
    calls: Arc<ApiCalls>,
    meter: Meter,
}

/// What the stacks name: images (each with its stack), and the SSM parameters their
/// templates name by `{{resolve:ssm:…}}`, with the stack's usage record.
pub type StackUsage = (Usage, Vec<(String, UsageRef)>);

/// A live stack: its name, its id, the (parameter, image) pairs it names, and the
/// (parameter, SSM parameter) pairs of its SSM-typed parameters.
type LiveStack = (String, String, Vec<(String, String)>, Vec<(String, String)>);

impl CloudFormation {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_cloudformation::Client, calls: Arc<ApiCalls>) -> Self {
        let once = aws_sdk_cloudformation::config::retry::RetryConfig::disabled();
        let paced = aws_sdk_cloudformation::Client::from_conf(
            client.config().to_builder().retry_config(once).build(),
        );
        Self {
            client,
            paced,
            calls,
            meter: Meter::default(),
        }
    }

    /// The same adapter, its reads metered by `meter` (the (account, Region)'s
    /// CloudFormation pacer).
    pub fn metered(&self, meter: Meter) -> Self {
        Self {
            meter,
            ..self.clone()
        }
    }

    fn reader(&self) -> &aws_sdk_cloudformation::Client {
        if self.meter.is_set() {
            &self.paced
        } else {
            &self.client
        }
    }

    /// Every stack not deleted: the images its parameters name (value, or an SSM-typed
    /// parameter's resolved value); with `templates`, also the literal ids and
    /// `{{resolve:ssm:…}}` references in its template as written (`GetTemplate`, one
    /// paced call per stack).
    pub async fn stack_usage(&self, templates: bool) -> Result<StackUsage, AwsError> {
        let need = "cloudformation:DescribeStacks";
        let stacks = self
            .meter
            .whole("DescribeStacks", || self.stack_pages())
            .await
            .map_err(|e| source_error("CloudFormation stacks", need, e))?;
        let mut usage = Usage::new();
        let mut refs = Vec::new();
        for (name, _, params, through_ssm) in &stacks {
            for (key, image) in params {
                usage.add(image.clone(), stack_user(name, &format!("parameter {key}")));
            }
            for (key, parameter) in through_ssm {
                let user = stack_user(name, &format!("parameter {key} resolve:ssm:{parameter}"));
                refs.push((parameter.clone(), user));
            }
        }
        if !templates {
            return Ok((usage, refs));
        }
        for (name, id, ..) in &stacks {
            let body = self
                .meter
                .whole("GetTemplate", || self.template(id))
                .await
                .map_err(|e| {
                    source_error("CloudFormation templates", "cloudformation:GetTemplate", e)
                })?;
            for image in image_ids_in(&body) {
                usage.add(image, stack_user(name, "template"));
            }
            for parameter in ssm_dynamic_references(&body) {
                let user = stack_user(name, &format!("template resolve:ssm:{parameter}"));
                refs.push((parameter, user));
            }
        }
        Ok((usage, refs))
    }

    /// Each live stack's name, id and the (parameter, image) pairs it names (all pages).
    async fn stack_pages(&self) -> Result<Vec<LiveStack>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self.reader().describe_stacks().into_paginator().send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeStacks");
            let resp = page.map_err(|e| from_sdk("DescribeStacks", e))?;
            self.meter
                .page("DescribeStacks", resp.next_token().is_some())
                .await?;
            for s in resp.stacks() {
                let status = s.stack_status().map(|s| s.as_str()).unwrap_or_default();
                if !stack_is_live(status) {
                    continue;
                }
                let name = s.stack_name().unwrap_or("stack").to_string();
                let id = s.stack_id().unwrap_or(&name).to_string();
                let (mut named, mut through_ssm) = (Vec::new(), Vec::new());
                for p in s.parameters() {
                    let key = p.parameter_key().unwrap_or("parameter");
                    let (value, resolved) = (p.parameter_value(), p.resolved_value());
                    for image in stack_parameter_images(value, resolved) {
                        named.push((key.to_string(), image));
                    }
                    if let Some(parameter) = stack_parameter_ssm(value, resolved) {
                        through_ssm.push((key.to_string(), parameter.to_string()));
                    }
                }
                out.push((name, id, named, through_ssm));
            }
        }
        Ok(out)
    }

    /// One stack's template as written (`TemplateStage` `Original`), by its id.
    async fn template(&self, stack: &str) -> Result<String, AwsError> {
        self.calls.record("GetTemplate");
        let resp = self
            .reader()
            .get_template()
            .stack_name(stack)
            .template_stage(TemplateStage::Original)
            .send()
            .await
            .map_err(|e| from_sdk("GetTemplate", e))?;
        Ok(resp.template_body().unwrap_or_default().to_string())
    }
}
