//! Readers of the users written down rather than running: `aws cloudformation
//! describe-stacks`, `aws emr describe-cluster` (one document per cluster; the CLI adds the
//! cluster's instance groups or fleets), `aws ec2 describe-spot-instance-requests`, and
//! local copies of reference objects. Each maps through the same rules (`crate::fields`)
//! as the live adapters; a field the source needs is required.

use serde::Deserialize;

use super::documents::{documents, Kind};
use super::{err, InputError};
use crate::fields::{
    emr_cluster_is_live, emr_user, reference_object_images, spot_request_user, stack_is_live,
    stack_parameter_images, stack_user,
};
use crate::model::Usage;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliStack {
    stack_name: String,
    stack_status: String,
    #[serde(default)]
    parameters: Vec<CliStackParameter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliStackParameter {
    parameter_key: String,
    #[serde(default)]
    parameter_value: Option<String>,
    #[serde(default)]
    resolved_value: Option<String>,
}

/// `aws cloudformation describe-stacks` output: the images every stack not deleted names
/// through its parameters (templates are read by the live sweep only).
pub fn parse_stacks(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliStack>> = documents(source, text, Kind::CloudFormationStacks)?;
    let mut usage = Usage::new();
    for s in docs.into_iter().flatten() {
        if !stack_is_live(&s.stack_status) {
            continue;
        }
        for p in &s.parameters {
            let images =
                stack_parameter_images(p.parameter_value.as_deref(), p.resolved_value.as_deref());
            for image in images {
                let what = format!("parameter {}", p.parameter_key);
                usage.add(image, stack_user(&s.stack_name, &what));
            }
        }
    }
    Ok(usage)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliCluster {
    id: String,
    #[serde(default)]
    name: Option<String>,
    status: CliClusterStatus,
    #[serde(default)]
    custom_ami_id: Option<String>,
    #[serde(default)]
    instance_groups: Vec<CliGroup>,
    #[serde(default)]
    instance_fleets: Vec<CliFleet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliClusterStatus {
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliGroup {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    custom_ami_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliFleet {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    instance_type_specifications: Vec<CliTypeSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliTypeSpec {
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    custom_ami_id: Option<String>,
}

/// `aws emr describe-cluster` outputs (one per cluster, one after the other): the images
/// of clusters that can still launch nodes, their own and their groups' or fleets'.
pub fn parse_emr_clusters(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<CliCluster> = documents(source, text, Kind::EmrClusters)?;
    let mut usage = Usage::new();
    for c in docs.iter().filter(|c| emr_cluster_is_live(&c.status.state)) {
        let mut add = |image: &Option<String>, what: String| {
            if let Some(image) = image {
                usage.add(image.clone(), emr_user(&c.id, c.name.as_deref(), &what));
            }
        };
        add(&c.custom_ami_id, "cluster".into());
        for g in &c.instance_groups {
            let group = g.name.as_deref().unwrap_or("instance group");
            add(&g.custom_ami_id, format!("group {group}"));
        }
        for f in &c.instance_fleets {
            let fleet = f.name.as_deref().unwrap_or("instance fleet");
            for t in &f.instance_type_specifications {
                let kind = t.instance_type.as_deref().unwrap_or("instance type");
                add(&t.custom_ami_id, format!("fleet {fleet} {kind}"));
            }
        }
    }
    Ok(usage)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliSpotRequest {
    spot_instance_request_id: String,
    state: String,
    #[serde(default, rename = "Type")]
    kind: Option<String>,
    #[serde(default)]
    launch_specification: Option<CliSpotSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliSpotSpec {
    #[serde(default)]
    image_id: Option<String>,
}

/// `aws ec2 describe-spot-instance-requests` output: the images of `open`, `active` and
/// `disabled` requests.
pub fn parse_spot_instance_requests(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliSpotRequest>> = documents(source, text, Kind::SpotInstanceRequests)?;
    let mut usage = Usage::new();
    for r in docs.into_iter().flatten() {
        let kind = r.kind.as_deref().unwrap_or("one-time");
        let found = spot_request_user(&r.spot_instance_request_id, kind, &r.state);
        let image = r.launch_specification.and_then(|l| l.image_id);
        if let (Some(image), Some(u)) = (image, found) {
            usage.add(image, u);
        }
    }
    Ok(usage)
}

/// Local copies of reference objects (`plan --reference-object FILE`): every AMI id in
/// each keeps its image, as `usage.reference_objects` does in a sweep; a file over the
/// size bound is refused.
pub fn parse_reference_object(source: &str, bytes: &[u8]) -> Result<Usage, InputError> {
    let mut usage = Usage::new();
    for (image, user) in reference_object_images(source, bytes).map_err(|e| err(source, e))? {
        usage.add(image, user);
    }
    Ok(usage)
}
