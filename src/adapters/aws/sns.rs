//! SNS: publishes the sweep summaries people read.

use std::sync::Arc;

use aws_sdk_sns::types::MessageAttributeValue;

use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};

/// The SNS adapter.
#[derive(Clone, Debug)]
pub struct Sns {
    client: aws_sdk_sns::Client,
    calls: Arc<ApiCalls>,
}

impl Sns {
    /// A client in the topic's region (the fourth field of its ARN); every call is
    /// counted in `calls`.
    pub fn for_topic(base: &aws_config::SdkConfig, topic_arn: &str, calls: Arc<ApiCalls>) -> Self {
        let mut config = base.to_builder();
        if let Some(region) = topic_arn.split(':').nth(3).filter(|r| !r.is_empty()) {
            config = config.region(aws_config::Region::new(region.to_string()));
        }
        Self {
            client: aws_sdk_sns::Client::new(&config.build()),
            calls,
        }
    }

    /// Publishes one message with its attributes (strings, for filter policies).
    pub async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        self.calls.record("Publish");
        let mut req = self
            .client
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(body);
        for (k, v) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| AwsError {
                    operation: "Publish",
                    code: None,
                    message: format!("attribute {k}: {e}"),
                })?;
            req = req.message_attributes(k, value);
        }
        req.send()
            .await
            .map_err(|e| from_sdk("Publish", e))
            .map(|_| ())
    }
}
