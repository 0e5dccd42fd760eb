//! CloudFormation: stacks whose parameters (and, with `usage.cloudformation_templates`,
//! templates) name images.

use std::sync::Arc;

use aws_sdk_cloudformation::types::TemplateStage;

use crate::adapters::aws::meter::{source_error, Meter};
use crate::adapters::aws::metered::Metered;
use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::{stack_is_live, template_has_transform, StackNames};
use crate::model::{Usage, UsageRef};

/// The CloudFormation adapter.
#[derive(Clone, Debug)]
pub struct CloudFormation(Metered<aws_sdk_cloudformation::Client>);

/// What the stacks name: images (each with its stack), and the SSM parameters their
/// templates name by `{{resolve:ssm:…}}`, with the stack's usage record.
pub type StackUsage = (Usage, Vec<(String, UsageRef)>);

impl CloudFormation {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_cloudformation::Client, calls: Arc<ApiCalls>) -> Self {
        Self(Metered::new(client, calls))
    }

    /// The same adapter, its reads metered by `meter` (the (account, Region)'s
    /// CloudFormation pacer).
    pub fn metered(&self, meter: Meter) -> Self {
        Self(self.0.metered(meter))
    }

    /// Every stack not deleted: the images its parameters name (value, or an SSM-typed
    /// parameter's resolved value, and the SSM parameter itself); with `templates`, also
    /// the literal ids and `{{resolve:ssm:…}}` references in its template as written
    /// (`GetTemplate`, one paced call per stack) and, when the template declares a
    /// transform, in its processed stage too (a second call).
    pub async fn stack_usage(&self, templates: bool) -> Result<StackUsage, AwsError> {
        let need = "cloudformation:DescribeStacks";
        let mut stacks = self
            .0
            .meter()
            .whole("DescribeStacks", || self.stack_pages())
            .await
            .map_err(|e| source_error("CloudFormation stacks", need, e))?;
        if templates {
            for (name, id, names) in &mut stacks {
                let original = self.template(id, TemplateStage::Original).await?;
                names.add_template(name, "template", &original);
                if template_has_transform(&original) {
                    let processed = self.template(id, TemplateStage::Processed).await?;
                    names.add_template(name, "processed template", &processed);
                }
            }
        }
        let mut usage = Usage::new();
        let mut refs = Vec::new();
        for (_, _, names) in stacks {
            for (image, user) in names.images {
                usage.add(image, user);
            }
            refs.extend(names.through_ssm);
        }
        Ok((usage, refs))
    }

    /// Each live stack's name, id and what its parameters name (all pages).
    async fn stack_pages(&self) -> Result<Vec<(String, String, StackNames)>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self.0.reader().describe_stacks().into_paginator().send();
        while let Some(page) = pages.next().await {
            self.0.record("DescribeStacks");
            let resp = page.map_err(|e| from_sdk("DescribeStacks", e))?;
            self.0
                .meter()
                .page("DescribeStacks", resp.next_token().is_some())
                .await?;
            for s in resp.stacks() {
                let status = s.stack_status().map(|s| s.as_str()).unwrap_or_default();
                if !stack_is_live(status) {
                    continue;
                }
                let name = s.stack_name().unwrap_or("stack").to_string();
                let id = s.stack_id().unwrap_or(&name).to_string();
                let parameters = s.parameters().iter().map(|p| {
                    let key = p.parameter_key().unwrap_or("parameter");
                    (key, p.parameter_value(), p.resolved_value())
                });
                let names = StackNames::of_parameters(&name, parameters);
                out.push((name, id, names));
            }
        }
        Ok(out)
    }

    /// One stack's template at `stage`, by the stack's id (one paced call).
    async fn template(&self, stack: &str, stage: TemplateStage) -> Result<String, AwsError> {
        let read = || async {
            self.0.record("GetTemplate");
            let resp = self
                .0
                .reader()
                .get_template()
                .stack_name(stack)
                .template_stage(stage.clone())
                .send()
                .await
                .map_err(|e| from_sdk("GetTemplate", e))?;
            Ok(resp.template_body().unwrap_or_default().to_string())
        };
        self.0
            .meter()
            .whole("GetTemplate", read)
            .await
            .map_err(|e| source_error("CloudFormation templates", "cloudformation:GetTemplate", e))
    }
}
