//! SQS: the cleanup queue. The sweep sends jobs in batches of ten with a delay;
//! `cleanup --queue-url` receives and deletes them.

use std::sync::Arc;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};

use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::jobs::CleanupJob;
use crate::ports::CleanupSink;

/// Messages per `SendMessageBatch` / `ReceiveMessage` (SQS's limit).
pub const SQS_BATCH: usize = 10;
/// SQS's longest `DelaySeconds`.
pub const MAX_DELAY_SECONDS: u32 = 900;

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    /// SQS message id.
    pub id: String,
    /// Handle to delete it with.
    pub receipt_handle: String,
    /// The job JSON.
    pub body: String,
}

/// The SQS adapter for one queue.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    delay_seconds: i32,
    calls: Arc<ApiCalls>,
}

impl SqsQueue {
    /// A queue; messages are sent with `delay_seconds` (at most 900) so that
    /// deregistrations settle before the worker sees them.
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        delay_seconds: u32,
        calls: Arc<ApiCalls>,
    ) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            delay_seconds: delay_seconds.min(MAX_DELAY_SECONDS) as i32,
            calls,
        }
    }

    /// Receives up to ten messages, waiting at most `wait_seconds` for the first.
    pub async fn receive(&self, wait_seconds: i32) -> Result<Vec<Message>, AwsError> {
        self.calls.record("ReceiveMessage");
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(SQS_BATCH as i32)
            .wait_time_seconds(wait_seconds)
            .send()
            .await
            .map_err(|e| from_sdk("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Message {
                id: m.message_id().unwrap_or_default().to_string(),
                receipt_handle: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// Deletes a handled message.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), AwsError> {
        self.calls.record("DeleteMessage");
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("DeleteMessage", e))
    }
}

impl SqsQueue {
    /// `ApproximateNumberOfMessages`: the messages visible now (a drain's budget).
    pub async fn visible_messages(&self) -> Result<u64, AwsError> {
        self.calls.record("GetQueueAttributes");
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| from_sdk("GetQueueAttributes", e))?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

impl SqsQueue {
    /// Sends message bodies as they are, ten per request; returns how many were sent, or
    /// the first failure (a dispatch that cannot send every message fails as a whole).
    pub async fn send_all(&self, bodies: &[String]) -> Result<usize, AwsError> {
        for batch in bodies.chunks(SQS_BATCH) {
            let entries: Vec<SendMessageBatchRequestEntry> = batch
                .iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(b)
                        .build()
                        .ok()
                })
                .collect();
            self.calls.record("SendMessageBatch");
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| from_sdk("SendMessageBatch", e))?;
            if let Some(f) = out.failed().first() {
                return Err(AwsError::new(
                    "SendMessageBatch",
                    f.code(),
                    f.message().unwrap_or_default(),
                ));
            }
        }
        Ok(bodies.len())
    }

    /// Sends a message body as it is, with a `reason` attribute: how a job that failed
    /// verification reaches the dead-letter queue with the worker's reason.
    pub async fn forward(&self, body: &str, reason: &str) -> Result<(), AwsError> {
        self.calls.record("SendMessage");
        let attribute = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| AwsError {
                operation: "SendMessage",
                code: None,
                message: e.to_string(),
            })?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_attributes("reason", attribute)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("SendMessage", e))
    }
}

impl CleanupSink for SqsQueue {
    fn batch_size(&self) -> usize {
        SQS_BATCH
    }

    async fn check(&self) -> Result<(), AwsError> {
        self.visible_messages()
            .await
            .map(|_| ())
            .map_err(|e| AwsError {
                message: format!("cleanup queue {}: {}", self.queue_url, e.message),
                ..e
            })
    }

    async fn enqueue(&self, jobs: Vec<CleanupJob>) -> Vec<(CleanupJob, AwsError)> {
        let mut failed = Vec::new();
        for batch in jobs.chunks(SQS_BATCH) {
            let entries: Vec<SendMessageBatchRequestEntry> = batch
                .iter()
                .enumerate()
                .filter_map(|(i, j)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(j.to_json())
                        .delay_seconds(self.delay_seconds)
                        .build()
                        .ok()
                })
                .collect();
            self.calls.record("SendMessageBatch");
            match self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    for f in out.failed() {
                        if let Some(job) = f.id().parse::<usize>().ok().and_then(|i| batch.get(i)) {
                            failed.push((
                                job.clone(),
                                AwsError {
                                    operation: "SendMessageBatch",
                                    code: Some(f.code().to_string()),
                                    message: f.message().unwrap_or_default().to_string(),
                                },
                            ));
                        }
                    }
                }
                Err(e) => {
                    let e = from_sdk("SendMessageBatch", e);
                    failed.extend(batch.iter().map(|j| (j.clone(), e.clone())));
                }
            }
        }
        failed
    }
}
