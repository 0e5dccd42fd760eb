//! Readers of the usage sources beyond instances, launch templates and launch
//! configurations: AWS's reference check, SSM parameters, EC2 Fleets, Spot Fleet requests,
//! Auto Scaling groups, Batch compute environments and Image Builder recipes. Each reads
//! the command's own output, fail-closed (a field the source needs is required), and maps
//! it through the same rules (`crate::fields`) as the live adapters.

use serde::Deserialize;

use super::documents::{documents, Kind};
use super::InputError;
use crate::fields::{
    fleet_is_live, is_image_id, reference_user, spot_fleet_is_live, ssm_parameter_user, user,
};
use crate::model::{Usage, UsageKind};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliReference {
    image_id: String,
    resource_type: String,
    arn: String,
}

/// `aws ec2 describe-image-references` output: each reference keeps its image.
pub fn parse_image_references(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliReference>> = documents(source, text, Kind::ImageReferences)?;
    let mut usage = Usage::new();
    for r in docs.into_iter().flatten() {
        usage.add(r.image_id, reference_user(&r.resource_type, &r.arn));
    }
    Ok(usage)
}

/// One SSM parameter as `get-parameters-by-path` / `get-parameters` print it. `Value` is
/// required: `describe-parameters` output (no values) is refused, not read as "nothing".
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliParameter {
    name: String,
    #[serde(default, rename = "Type")]
    kind: Option<String>,
    value: String,
    #[serde(default)]
    data_type: Option<String>,
}

/// `aws ssm get-parameters-by-path --recursive` (or `get-parameters`) output: parameters
/// of data type `aws:ec2:image`, and `String` ones under `paths` holding an AMI id. The
/// parameters' names and values are also returned, to resolve `resolve:ssm:` launch
/// template ids offline.
pub fn parse_ssm_parameters(
    source: &str,
    text: &str,
    paths: &[String],
) -> Result<(Usage, Vec<(String, String)>), InputError> {
    let params: Vec<CliParameter> =
        documents::<Vec<CliParameter>>(source, text, Kind::SsmParameters)?
            .into_iter()
            .flatten()
            .collect();
    let mut usage = Usage::new();
    for p in &params {
        let found = ssm_parameter_user(
            &p.name,
            p.data_type.as_deref(),
            p.kind.as_deref(),
            &p.value,
            paths,
        );
        if let Some(u) = found {
            usage.add(p.value.clone(), u);
        }
    }
    Ok((
        usage,
        params.into_iter().map(|p| (p.name, p.value)).collect(),
    ))
}

/// A launch template as a fleet, group or compute environment names it.
#[derive(Deserialize, Default)]
struct CliTemplateSpec {
    #[serde(default, alias = "launchTemplateId", rename = "LaunchTemplateId")]
    id: Option<String>,
    #[serde(default, alias = "launchTemplateName", rename = "LaunchTemplateName")]
    name: Option<String>,
    #[serde(default, alias = "version", rename = "Version")]
    version: Option<String>,
}

impl CliTemplateSpec {
    fn record(&self, usage: &mut Usage) {
        if let Some(t) = self.id.as_deref().or(self.name.as_deref()) {
            usage.add_template_reference(t, self.version.as_deref());
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliFleet {
    fleet_id: String,
    fleet_state: String,
    #[serde(default)]
    launch_template_configs: Vec<CliFleetConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliFleetConfig {
    #[serde(default)]
    launch_template_specification: Option<CliTemplateSpec>,
    #[serde(default)]
    overrides: Vec<CliOverride>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliOverride {
    #[serde(default)]
    image_id: Option<String>,
}

/// `aws ec2 describe-fleets` output: the override images of fleets that can still launch.
pub fn parse_fleets(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliFleet>> = documents(source, text, Kind::Fleets)?;
    let mut usage = Usage::new();
    for f in docs
        .into_iter()
        .flatten()
        .filter(|f| fleet_is_live(&f.fleet_state))
    {
        for c in &f.launch_template_configs {
            if let Some(spec) = &c.launch_template_specification {
                spec.record(&mut usage);
            }
            for image in c.overrides.iter().filter_map(|o| o.image_id.as_ref()) {
                usage.add(image.clone(), user(UsageKind::Fleet, &f.fleet_id));
            }
        }
    }
    Ok(usage)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliSpotFleet {
    spot_fleet_request_id: String,
    spot_fleet_request_state: String,
    spot_fleet_request_config: CliSpotConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliSpotConfig {
    #[serde(default)]
    launch_specifications: Vec<CliOverride>,
    #[serde(default)]
    launch_template_configs: Vec<CliFleetConfig>,
}

/// `aws ec2 describe-spot-fleet-requests` output: the launch specifications' images of
/// requests that can still launch, and the template versions they name.
pub fn parse_spot_fleet_requests(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliSpotFleet>> = documents(source, text, Kind::SpotFleetRequests)?;
    let mut usage = Usage::new();
    for r in docs
        .into_iter()
        .flatten()
        .filter(|r| spot_fleet_is_live(&r.spot_fleet_request_state))
    {
        let cfg = &r.spot_fleet_request_config;
        for image in cfg
            .launch_specifications
            .iter()
            .filter_map(|l| l.image_id.as_ref())
        {
            usage.add(
                image.clone(),
                user(UsageKind::SpotFleet, &r.spot_fleet_request_id),
            );
        }
        for spec in cfg
            .launch_template_configs
            .iter()
            .filter_map(|c| c.launch_template_specification.as_ref())
        {
            spec.record(&mut usage);
        }
    }
    Ok(usage)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliGroup {
    #[serde(default)]
    launch_template: Option<CliTemplateSpec>,
    #[serde(default)]
    mixed_instances_policy: Option<CliMixed>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliMixed {
    #[serde(default)]
    launch_template: Option<CliMixedTemplate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliMixedTemplate {
    #[serde(default)]
    launch_template_specification: Option<CliTemplateSpec>,
    #[serde(default)]
    overrides: Vec<CliGroupOverride>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliGroupOverride {
    #[serde(default)]
    launch_template_specification: Option<CliTemplateSpec>,
}

/// `aws autoscaling describe-auto-scaling-groups` output: the launch template versions the
/// groups launch (their own, their mixed-instances policy's, and overrides').
pub fn parse_auto_scaling_groups(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliGroup>> = documents(source, text, Kind::AutoScalingGroups)?;
    let mut usage = Usage::new();
    for g in docs.into_iter().flatten() {
        if let Some(spec) = &g.launch_template {
            spec.record(&mut usage);
        }
        let Some(lt) = g.mixed_instances_policy.and_then(|m| m.launch_template) else {
            continue;
        };
        let overrides = lt
            .overrides
            .iter()
            .filter_map(|o| o.launch_template_specification.as_ref());
        for spec in lt.launch_template_specification.iter().chain(overrides) {
            spec.record(&mut usage);
        }
    }
    Ok(usage)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CliComputeEnvironment {
    compute_environment_name: String,
    #[serde(default)]
    compute_resources: Option<CliComputeResources>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CliComputeResources {
    #[serde(default)]
    image_id: Option<String>,
    #[serde(default)]
    ec2_configuration: Vec<CliEc2Configuration>,
    #[serde(default)]
    launch_template: Option<CliTemplateSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CliEc2Configuration {
    #[serde(default)]
    image_id_override: Option<String>,
}

/// `aws batch describe-compute-environments` output: `imageId` and every
/// `ec2Configuration[].imageIdOverride`, and the template versions named.
pub fn parse_compute_environments(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliComputeEnvironment>> = documents(source, text, Kind::ComputeEnvironments)?;
    let mut usage = Usage::new();
    for ce in docs.into_iter().flatten() {
        let Some(res) = ce.compute_resources else {
            continue;
        };
        let overrides = res
            .ec2_configuration
            .iter()
            .filter_map(|c| c.image_id_override.as_ref());
        for image in res.image_id.iter().chain(overrides) {
            usage.add(
                image.clone(),
                user(
                    UsageKind::BatchComputeEnvironment,
                    &ce.compute_environment_name,
                ),
            );
        }
        if let Some(spec) = &res.launch_template {
            spec.record(&mut usage);
        }
    }
    Ok(usage)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CliRecipe {
    arn: String,
    #[serde(default)]
    parent_image: Option<String>,
}

/// `aws imagebuilder list-image-recipes --owner Self` output: recipes whose parent image
/// is an AMI id keep it.
pub fn parse_image_recipes(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliRecipe>> = documents(source, text, Kind::ImageRecipes)?;
    let mut usage = Usage::new();
    for r in docs.into_iter().flatten() {
        if let Some(parent) = r.parent_image.filter(|p| is_image_id(p)) {
            usage.add(parent, user(UsageKind::ImageRecipe, &r.arn));
        }
    }
    Ok(usage)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliRule {
    identifier: String,
    resource_type: String,
    retention_period: CliPeriod,
    #[serde(default)]
    resource_tags: Vec<CliTag>,
    #[serde(default)]
    exclude_resource_tags: Vec<CliTag>,
    status: String,
    #[serde(default)]
    lock_state: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliPeriod {
    retention_period_value: u32,
    retention_period_unit: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliTag {
    resource_tag_key: String,
    #[serde(default)]
    resource_tag_value: Option<String>,
}

/// `aws rbin get-rule` outputs: a JSON array of them, or several one after the other.
/// Each needs its `Identifier`, `ResourceType`, `RetentionPeriod` and `Status` (a rule not
/// yet `available` retains nothing and is left out, as in a sweep).
pub fn parse_recycle_bin_rules(
    source: &str,
    text: &str,
) -> Result<crate::recycle_bin::BinRules, InputError> {
    use crate::recycle_bin::{BinResource, BinRule, BinRules, TagMatch};
    let fail = |m: String| super::err(source, m);
    let mut values = Vec::new();
    for (n, doc) in serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .enumerate()
    {
        let doc = doc.map_err(|e| fail(format!("document {}: not JSON: {e}", n + 1)))?;
        match doc {
            serde_json::Value::Array(items) => values.extend(items),
            other => values.push(other),
        }
    }
    if values.is_empty() {
        return Err(fail(
            "no rules: expected `aws rbin get-rule` outputs".into(),
        ));
    }
    let tags = |t: Vec<CliTag>| {
        t.into_iter()
            .map(|t| TagMatch {
                key: t.resource_tag_key,
                value: t.resource_tag_value,
            })
            .collect()
    };
    let mut rules = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let r: CliRule = serde_path_to_error::deserialize(v).map_err(|e| {
            fail(format!(
                "rule {i}: {}: {} (each must be `aws rbin get-rule` output)",
                e.path(),
                e.inner()
            ))
        })?;
        let resource = BinResource::parse(&r.resource_type).ok_or_else(|| {
            fail(format!(
                "rule {i}: ResourceType {:?} is not EC2_IMAGE or EBS_SNAPSHOT",
                r.resource_type
            ))
        })?;
        if r.retention_period.retention_period_unit != "DAYS" {
            return Err(fail(format!(
                "rule {i}: RetentionPeriodUnit {:?} is not DAYS",
                r.retention_period.retention_period_unit
            )));
        }
        if r.status != "available" {
            continue;
        }
        rules.push(BinRule {
            id: r.identifier,
            resource,
            retention_days: r.retention_period.retention_period_value,
            resource_tags: tags(r.resource_tags),
            exclude_tags: tags(r.exclude_resource_tags),
            locked: r.lock_state.as_deref() == Some("locked"),
        });
    }
    Ok(BinRules(rules))
}
