//! Readers of the users written down rather than running: `aws cloudformation
//! describe-stacks`, `aws emr describe-cluster` (one document per cluster; the CLI adds the
//! cluster's instance groups or fleets), `aws ec2 describe-spot-instance-requests`, and
//! local copies of reference objects; with `usage.cloudformation_templates`, `aws
//! cloudformation get-template` per stack. Each maps through the same rules (`crate::fields`)
//! as the live adapters; a field the source needs is required.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::documents::{documents, Kind};
use super::{err, InputError};
use crate::fields::{
    emr_cluster_is_live, emr_user, image_ids_in, reference_object_images, spot_request_user,
    stack_is_live, template_has_transform, StackNames,
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

/// Where the offline plan finds the stacks' templates, as `usage.cloudformation_templates`
/// asks: not read (off), or one `get-template` output per stack in a directory (on), or
/// on with no directory given (then any live stack stops the plan: its template's ids
/// are a fact the plan does not have).
#[derive(Debug, Clone, Copy)]
pub enum StackTemplates<'a> {
    /// `usage.cloudformation_templates` is off: templates are not read, live or offline.
    Off,
    /// `--cloudformation-templates DIR`: `DIR/<stack name>.json` (and, for a template that
    /// declares a transform, `DIR/<stack name>.processed.json`).
    In(&'a Path),
    /// On, but no directory was given.
    Missing,
}

/// `aws cloudformation describe-stacks` output: what every stack not deleted names, by the
/// same rule as the live sweep ([`StackNames`]): its parameters, its SSM-typed
/// parameters' SSM parameters as they are now (`parameters`, from `--ssm-parameters`),
/// and its template (`templates`). A fact the files do not hold (an SSM parameter not
/// given, a template missing) is an error naming what to pass: the plan cannot say
/// which image it keeps, so it plans nothing rather than free that image.
pub fn parse_stacks(
    source: &str,
    text: &str,
    parameters: &BTreeMap<String, String>,
    templates: StackTemplates<'_>,
) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliStack>> = documents(source, text, Kind::CloudFormationStacks)?;
    let mut usage = Usage::new();
    for s in docs.into_iter().flatten() {
        if !stack_is_live(&s.stack_status) {
            continue;
        }
        let name = &s.stack_name;
        let mut names = StackNames::of_parameters(
            name,
            s.parameters.iter().map(|p| {
                let (value, resolved) = (&p.parameter_value, &p.resolved_value);
                (
                    p.parameter_key.as_str(),
                    value.as_deref(),
                    resolved.as_deref(),
                )
            }),
        );
        add_template(source, name, templates, &mut names)?;
        for (image, user) in names.images {
            usage.add(image, user);
        }
        for (parameter, user) in names.through_ssm {
            let Some(value) = parameters.get(&parameter) else {
                return Err(err(
                    source,
                    format!(
                        "{} names SSM parameter {parameter}, which this offline plan cannot read: \
                         pass `aws ssm get-parameters --names {parameter}` output in \
                         --ssm-parameters (one file may hold several outputs, one after the \
                         other); nothing is planned",
                        user.id
                    ),
                ));
            };
            for image in image_ids_in(value) {
                usage.add(image, user.clone());
            }
        }
    }
    Ok(usage)
}

/// Adds what stack `name`'s template names, as [`StackTemplates`] says.
fn add_template(
    source: &str,
    name: &str,
    templates: StackTemplates<'_>,
    names: &mut StackNames,
) -> Result<(), InputError> {
    let dir = match templates {
        StackTemplates::Off => return Ok(()),
        StackTemplates::In(dir) => dir,
        StackTemplates::Missing => {
            return Err(err(
                source,
                format!(
                    "usage.cloudformation_templates is on, and stack {name}'s template was not \
                     given: pass --cloudformation-templates DIR, with DIR/{name}.json holding \
                     `aws cloudformation get-template --stack-name {name} --template-stage \
                     Original` output; nothing is planned"
                ),
            ))
        }
    };
    let original = template_body(&dir.join(format!("{name}.json")), name, "Original")?;
    names.add_template(name, "template", &original);
    if template_has_transform(&original) {
        let path = dir.join(format!("{name}.processed.json"));
        let processed = template_body(&path, name, "Processed")?;
        names.add_template(name, "processed template", &processed);
    }
    Ok(())
}

/// The body of one `get-template` output: YAML comes as a string, JSON as the CLI's
/// parsed object (read back as text; ids and references survive either way).
fn template_body(path: &Path, stack: &str, stage: &str) -> Result<String, InputError> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        err(
            &source,
            format!(
                "cannot read ({e}): usage.cloudformation_templates needs stack {stack}'s \
                 template there, `aws cloudformation get-template --stack-name {stack} \
                 --template-stage {stage}` output; nothing is planned"
            ),
        )
    })?;
    let text = super::documents::decode(&source, bytes)?;
    let bodies: Vec<serde_json::Value> = documents(&source, &text, Kind::CloudFormationTemplate)?;
    Ok(bodies
        .iter()
        .map(|b| match b {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n"))
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
