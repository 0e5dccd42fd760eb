//! Reference objects (`usage.reference_objects`): Terraform state, Packer manifests and
//! released templates in S3, read once per run with the deployment's own role, their AMI
//! ids applied as usage to every region and every pair of an organization sweep.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::adapters::aws::meter::Meter;
use crate::adapters::aws::Clients;
use crate::app::ratelimit::{Pacer, S3_READS};
use crate::app::sweep::ExecConfig;
use crate::model::Usage;
use crate::policy::{s3_place, Policy};

/// What the policy's reference objects name, read with `hub`'s own credentials: `None`
/// when the policy names none; `Err` (one line) when any object cannot be read, which
/// stops every region of the run with nothing changed.
pub async fn reference_usage(
    hub: &Clients,
    policy: &Policy,
    exec: &ExecConfig,
) -> Option<Arc<Result<Usage, String>>> {
    let places = &policy.usage.reference_objects;
    if places.is_empty() {
        return None;
    }
    Some(Arc::new(read(hub, policy, places, exec).await))
}

/// Each place in turn, from its bucket's own region, on that region's S3 pacer.
async fn read(
    hub: &Clients,
    policy: &Policy,
    places: &[String],
    exec: &ExecConfig,
) -> Result<Usage, String> {
    let home = hub
        .base()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let locator = hub.region(&home).s3;
    let pace = exec.pace.with_share(policy.limits.api_share).pace(S3_READS);
    let mut pacers: BTreeMap<String, Arc<Pacer>> = BTreeMap::new();
    let mut usage = Usage::new();
    for place in places {
        let failed = |e: String| format!("usage.reference_objects {place}: {e}");
        let (bucket, prefix) =
            s3_place(place).ok_or_else(|| failed("not an s3://bucket/prefix/ place".into()))?;
        let region = locator.bucket_region(bucket).await.map_err(|e| {
            failed(format!(
                "{e} (s3:GetBucketLocation on the bucket is the template's ReferenceObjectBuckets)"
            ))
        })?;
        let pacer = pacers
            .entry(region.clone())
            .or_insert_with(|| Arc::new(Pacer::new(S3_READS, pace, exec.stop.clone())))
            .clone();
        let reader = hub
            .region(&region)
            .reference_objects
            .metered(Meter::on(pacer));
        let named = reader
            .place_usage(bucket, prefix)
            .await
            .map_err(|e| failed(e.to_string()))?;
        usage.extend(named);
    }
    Ok(usage)
}
