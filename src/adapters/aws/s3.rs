//! S3: reads bundle manifests and deletes exactly the listed objects.

use std::sync::Arc;

use aws_sdk_s3::types::{Delete, ObjectIdentifier, Tag, Tagging};

use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::model::{Manifest, Tags};
use crate::orphans::STORAGE_MARK;
use crate::ports::{BundleInventory, BundleStore};

/// The S3 adapter.
#[derive(Clone, Debug)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    calls: Arc<ApiCalls>,
}

impl S3 {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_s3::Client, calls: Arc<ApiCalls>) -> Self {
        Self { client, calls }
    }
}

impl S3 {
    /// The region a bucket lives in (`GetBucketLocation`: no constraint is `us-east-1`,
    /// the legacy `EU` is `eu-west-1`).
    pub async fn bucket_region(&self, bucket: &str) -> Result<String, AwsError> {
        self.calls.record("GetBucketLocation");
        let out = self
            .client
            .get_bucket_location()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| from_sdk("GetBucketLocation", e))?;
        Ok(match out.location_constraint().map(|c| c.as_str()) {
            None | Some("") => "us-east-1".to_string(),
            Some("EU") => "eu-west-1".to_string(),
            Some(other) => other.to_string(),
        })
    }

    /// The keys under `prefix` in `bucket` (all pages; "folders" left out): an approved
    /// organization dry run's reports.
    pub async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("ListObjectsV2");
            let resp = page.map_err(|e| from_sdk("ListObjectsV2", e))?;
            out.extend(
                resp.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter(|k| !k.ends_with('/'))
                    .map(str::to_string),
            );
        }
        Ok(out)
    }

    /// Writes a run's report (JSON) to the hub's report bucket.
    pub async fn put_report(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), AwsError> {
        self.calls.record("PutObject");
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| from_sdk("PutObject", e))
            .map(|_| ())
    }
}

/// How a lease write must find the object: absent, or exactly as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `If-None-Match: *`: only if no object is there.
    Absent,
    /// `If-Match: <etag>`: only if the object is still the one read.
    Unchanged(String),
}

impl S3 {
    /// Reads a small object and its ETag (a pair's lease); `None` when there is none.
    pub async fn get_with_etag(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, String)>, AwsError> {
        self.calls.record("GetObject");
        let out = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let e = from_sdk("GetObject", e);
                return if e.is("NoSuchKey") { Ok(None) } else { Err(e) };
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| AwsError {
            operation: "GetObject",
            code: None,
            message: format!("reading the body failed: {e}"),
        })?;
        Ok(Some((body.to_vec(), etag)))
    }

    /// Writes an object only if `condition` holds (S3's conditional writes): its new ETag,
    /// or `None` when another writer got there first (`PreconditionFailed`, or a
    /// conflicting concurrent write).
    pub async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        condition: &Precondition,
    ) -> Result<Option<String>, AwsError> {
        self.calls.record("PutObject");
        let put = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into());
        let put = match condition {
            Precondition::Absent => put.if_none_match("*"),
            Precondition::Unchanged(etag) => put.if_match(etag),
        };
        match put.send().await {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            Err(e) => {
                let e = from_sdk("PutObject", e);
                if e.is("PreconditionFailed") || e.is("ConditionalRequestConflict") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes one object (a released lease); deleting what is gone succeeds.
    pub async fn delete_key(&self, bucket: &str, key: &str) -> Result<(), AwsError> {
        self.calls.record("DeleteObject");
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| from_sdk("DeleteObject", e))
            .map(|_| ())
    }
}

impl BundleStore for S3 {
    async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, AwsError> {
        self.calls.record("GetObject");
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| from_sdk("GetObject", e))?;
        let body = out.body.collect().await.map_err(|e| AwsError {
            operation: "GetObject",
            code: None,
            message: format!("reading the body failed: {e}"),
        })?;
        Ok(body.to_vec())
    }

    async fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<(String, AwsError)>, AwsError> {
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AwsError {
                operation: "DeleteObjects",
                code: None,
                message: e.to_string(),
            })?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| AwsError {
                operation: "DeleteObjects",
                code: None,
                message: e.to_string(),
            })?;
        self.calls.record("DeleteObjects");
        let out = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| from_sdk("DeleteObjects", e))?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                (
                    e.key().unwrap_or_default().to_string(),
                    AwsError {
                        operation: "DeleteObjects",
                        code: e.code().map(str::to_string),
                        message: e.message().unwrap_or_default().to_string(),
                    },
                )
            })
            .collect())
    }
}

fn local_error(operation: &'static str, e: impl std::fmt::Display) -> AwsError {
    AwsError {
        operation,
        code: None,
        message: e.to_string(),
    }
}

impl BundleInventory for S3 {
    async fn list_manifests(&self, bucket: &str) -> Result<Vec<Manifest>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("ListObjectsV2");
            let resp = page.map_err(|e| from_sdk("ListObjectsV2", e))?;
            for o in resp.contents() {
                let Some(key) = o.key().filter(|k| k.ends_with(".manifest.xml")) else {
                    continue;
                };
                out.push(Manifest {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    last_modified: o
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                    tags: Tags::new(),
                });
            }
        }
        Ok(out)
    }

    async fn object_tags(&self, bucket: &str, key: &str) -> Result<Tags, AwsError> {
        self.calls.record("GetObjectTagging");
        let out = self
            .client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| from_sdk("GetObjectTagging", e))?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    async fn manifest_modified(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<crate::model::Timestamp>, AwsError> {
        self.calls.record("HeadObject");
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| from_sdk("HeadObject", e))?;
        Ok(out
            .last_modified()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())))
    }

    async fn mark_manifest(&self, bucket: &str, key: &str, image_id: &str) -> Result<(), AwsError> {
        let mut tags = self.object_tags(bucket, key).await?;
        tags.insert(STORAGE_MARK, image_id);
        let set = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| local_error("PutObjectTagging", e))?;
        let tagging = Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| local_error("PutObjectTagging", e))?;
        self.calls.record("PutObjectTagging");
        self.client
            .put_object_tagging()
            .bucket(bucket)
            .key(key)
            .tagging(tagging)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("PutObjectTagging", e))
    }
}
