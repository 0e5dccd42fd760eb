//! S3 reference objects (`usage.reference_objects`): Terraform state, Packer manifests
//! and released templates whose AMI ids keep images.

use std::sync::Arc;

use crate::adapters::aws::meter::{source_error, Meter};
use crate::adapters::aws::metered::Metered;
use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::{reference_object_images, reference_object_too_big, reference_place_empty};
use crate::model::Usage;

/// The permissions reading reference objects needs, for its errors.
const NEEDS: &str = "s3:ListBucket and s3:GetObject on the bucket, and kms:Decrypt on its key \
                     (the template's ReferenceObjectBuckets and ReferenceObjectKeys)";

/// Reads reference objects with S3.
#[derive(Clone, Debug)]
pub struct ReferenceObjects(Metered<aws_sdk_s3::Client>);

impl ReferenceObjects {
    /// Wraps an S3 client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_s3::Client, calls: Arc<ApiCalls>) -> Self {
        Self(Metered::new(client, calls))
    }

    /// The same reader, its calls metered by `meter` (the (account, Region)'s S3 pacer).
    pub fn metered(&self, meter: Meter) -> Self {
        Self(self.0.metered(meter))
    }

    /// Every image the objects under `bucket`/`prefix` name, each with its object (and,
    /// for Terraform state and Packer manifests, where in it). An object over the size
    /// bound, one that cannot be read, or a place with no object at all is an error: the
    /// run's regions then stop.
    pub async fn place_usage(&self, bucket: &str, prefix: &str) -> Result<Usage, AwsError> {
        let keys = self
            .0
            .meter()
            .whole("ListObjectsV2", || self.list(bucket, prefix))
            .await
            .map_err(|e| source_error("reference objects", NEEDS, e))?;
        let place = format!("s3://{bucket}/{prefix}");
        if let Some(e) = reference_place_empty(&place, keys.len()) {
            return Err(AwsError::new("ListObjectsV2", "ReferencePlaceEmpty", e));
        }
        let mut usage = Usage::new();
        for (key, size) in keys {
            let place = format!("s3://{bucket}/{key}");
            if let Some(e) = reference_object_too_big(&place, size) {
                return Err(AwsError::new("GetObject", "ReferenceObjectTooLarge", e));
            }
            let body = self
                .0
                .meter()
                .whole("GetObject", || self.get(bucket, &key))
                .await
                .map_err(|e| source_error("reference objects", NEEDS, e))?;
            let found = reference_object_images(&place, &body)
                .map_err(|e| AwsError::new("GetObject", "ReferenceObjectUnreadable", e))?;
            for (image, user) in found {
                usage.add(image, user);
            }
        }
        Ok(usage)
    }

    /// The keys and sizes of the objects under the prefix (all pages; "folders" left out).
    /// Also how an approved organization dry run's reports are found.
    pub(crate) async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .0
            .reader()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.0.record("ListObjectsV2");
            let resp = page.map_err(|e| from_sdk("ListObjectsV2", e))?;
            self.0
                .meter()
                .page("ListObjectsV2", resp.next_continuation_token().is_some())
                .await?;
            for o in resp.contents() {
                let Some(key) = o.key().filter(|k| !k.ends_with('/')) else {
                    continue;
                };
                let size = o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                out.push((key.to_string(), size));
            }
        }
        Ok(out)
    }

    /// One object's body (also an approved plan's).
    pub(crate) async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, AwsError> {
        self.0.record("GetObject");
        crate::adapters::aws::s3::object_body(self.0.reader(), bucket, key).await
    }
}
