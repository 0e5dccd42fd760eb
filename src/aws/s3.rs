//! S3: reads bundle manifests and deletes exactly the listed objects.

use std::sync::Arc;

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use crate::error::{from_sdk, AwsError};
use crate::ports::BundleStore;
use crate::report::ApiCalls;

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
