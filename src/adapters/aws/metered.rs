//! One service client as the usage sources of other services read it (CloudFormation,
//! EMR, S3 reference objects): counted, and metered by the (account, Region, service)
//! pacer when one is set, through a copy of the client without the SDK's retries (the
//! pacer retries, and must see each throttle).

use std::sync::Arc;

use crate::adapters::aws::meter::Meter;
use crate::adapters::aws::ApiCalls;

/// An SDK client that can be copied without its retries.
pub trait WithoutRetries: Clone {
    /// The same client (endpoint, credentials, interceptors), each call made once.
    fn without_retries(&self) -> Self;
}

macro_rules! without_retries {
    ($($sdk:ident),*) => {$(
        impl WithoutRetries for $sdk::Client {
            fn without_retries(&self) -> Self {
                let once = $sdk::config::retry::RetryConfig::disabled();
                $sdk::Client::from_conf(self.config().to_builder().retry_config(once).build())
            }
        }
    )*};
}

without_retries!(aws_sdk_cloudformation, aws_sdk_emr, aws_sdk_s3);

/// A client, its no-retry copy, the run's call counter and the meter its reads go
/// through: what each of these adapters holds.
#[derive(Clone, Debug)]
pub struct Metered<C> {
    client: C,
    paced: C,
    calls: Arc<ApiCalls>,
    meter: Meter,
}

impl<C: WithoutRetries> Metered<C> {
    /// Wraps a client, unmetered; every call is counted in `calls`.
    pub fn new(client: C, calls: Arc<ApiCalls>) -> Self {
        Self {
            paced: client.without_retries(),
            client,
            calls,
            meter: Meter::default(),
        }
    }

    /// The same client, its reads metered by `meter`.
    pub fn metered(&self, meter: Meter) -> Self {
        Self {
            meter,
            ..self.clone()
        }
    }

    /// The client to read with: without retries under a meter, else the SDK's own.
    pub fn reader(&self) -> &C {
        if self.meter.is_set() {
            &self.paced
        } else {
            &self.client
        }
    }

    /// The meter (whole listings, pages, per-object calls).
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Counts one call of `operation`.
    pub fn record(&self, operation: &'static str) {
        self.calls.record(operation);
    }
}
