//! EC2 Image Builder: image recipes whose parent image is one of the account's AMIs (the
//! source used where AWS's reference check is not available).

use std::sync::Arc;

use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::{is_image_id, user};
use crate::model::{Usage, UsageKind};

/// The Image Builder adapter.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    client: aws_sdk_imagebuilder::Client,
    calls: Arc<ApiCalls>,
}

impl ImageBuilder {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_imagebuilder::Client, calls: Arc<ApiCalls>) -> Self {
        Self { client, calls }
    }

    /// The account's own image recipes whose `parentImage` is an AMI id (all pages).
    pub async fn recipe_parents(&self) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut pages = self
            .client
            .list_image_recipes()
            .owner(aws_sdk_imagebuilder::types::Ownership::SelfValue)
            .max_results(25)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("ListImageRecipes");
            let resp = page.map_err(|e| from_sdk("ListImageRecipes", e))?;
            for r in resp.image_recipe_summary_list() {
                if let Some(parent) = r.parent_image().filter(|p| is_image_id(p)) {
                    let id = r.arn().or(r.name()).unwrap_or("image-recipe");
                    usage.add(parent, user(UsageKind::ImageRecipe, id));
                }
            }
        }
        Ok(usage)
    }
}
