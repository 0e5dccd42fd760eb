//! The meter a service adapter's reads go through: the sweep's pacer for that
//! (account, Region, service), when one is set ([`crate::ports::PageMeter`]).

use std::sync::Arc;

use crate::error::AwsError;
use crate::ports::PageMeter;

/// A service adapter's meter: unset (the SDK's own retries apply) or the pacer that
/// meters its listings' pages and its per-object calls.
#[derive(Clone, Debug, Default)]
pub struct Meter(Option<Arc<dyn PageMeter>>);

impl Meter {
    /// A meter on `pacer`.
    pub fn on(pacer: Arc<dyn PageMeter>) -> Self {
        Self(Some(pacer))
    }

    /// Whether a pacer is set: its adapter then reads through a client without the
    /// SDK's retries (the pacer retries, and must see each throttle).
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Waits for the token of the next page of `operation`, if there is one (`more`).
    pub async fn page(&self, operation: &'static str, more: bool) -> Result<(), AwsError> {
        match (&self.0, more) {
            (Some(m), true) => m.page(operation).await,
            _ => Ok(()),
        }
    }

    /// A whole listing (or one call), under the pacer when set: a throttled attempt slows
    /// it and is made again until the run stops. Unset, it is made once as it is.
    pub async fn whole<'s, T, F, Fut>(
        &'s self,
        operation: &'static str,
        list: F,
    ) -> Result<T, AwsError>
    where
        F: Fn() -> Fut + Send + Sync + 's,
        Fut: std::future::Future<Output = Result<T, AwsError>> + Send + 's,
        T: Send + 's,
    {
        crate::ports::under_meter(self.0.as_deref(), operation, list).await
    }
}

/// `e` from a usage source, its message naming the source and the permission it needs,
/// so a refused read (a member stack deployed before the source existed) says what to
/// grant. The code is kept: it decides what the failure means.
pub fn source_error(source: &str, permission: &str, e: AwsError) -> AwsError {
    AwsError {
        message: format!(
            "{} (usage source {source}, which needs {permission}; nothing was changed)",
            e.message
        ),
        ..e
    }
}
