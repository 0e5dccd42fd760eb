//! Typed errors of the AWS-facing layers. They keep the AWS error code, because the
//! code (not the message) decides what a failure means: done, retry, skip or fail.

/// One failed AWS call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct AwsError {
    /// The API operation, e.g. `DeregisterImage`.
    pub operation: &'static str,
    /// The AWS error code, e.g. `InvalidSnapshot.InUse`; `None` for transport failures.
    pub code: Option<String>,
    /// The service's message, or a description of the transport failure.
    pub message: String,
}

impl AwsError {
    /// An error with a code, as AWS would return it.
    pub fn new(
        operation: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            operation,
            code: Some(code.into()),
            message: message.into(),
        }
    }

    /// Whether the AWS error code is `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Converts any SDK error, keeping its code and message; what has no code
/// (timeouts, connection failures) is described in full.
pub fn from_sdk<E, R>(operation: &'static str, err: aws_sdk_ec2::error::SdkError<E, R>) -> AwsError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    let code = err.code().map(str::to_string);
    let message = match err.message() {
        Some(m) => m.to_string(),
        None => aws_smithy_types::error::display::DisplayErrorContext(&err).to_string(),
    };
    AwsError {
        operation,
        code,
        message,
    }
}
