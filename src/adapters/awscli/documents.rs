//! Reading AWS CLI output files fail-closed. A usage file that is read wrong protects
//! nothing, so each input must be exactly the command's output: its own top-level key,
//! UTF-8 (a byte-order mark is fine), complete (no `NextToken`), and nothing after the
//! JSON but more documents of the same kind (what `>>` in a loop writes), which are merged.

use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::InputError;

/// Which AWS CLI command's output an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `aws ec2 describe-images`.
    Images,
    /// `aws ec2 describe-instances`.
    Instances,
    /// `aws ec2 describe-launch-template-versions`.
    LaunchTemplateVersions,
    /// `aws autoscaling describe-launch-configurations`.
    LaunchConfigurations,
    /// `aws ec2 describe-snapshots`.
    Snapshots,
    /// `aws ec2 describe-image-references`.
    ImageReferences,
    /// `aws ssm get-parameters-by-path` (or `get-parameters`).
    SsmParameters,
    /// `aws ec2 describe-fleets`.
    Fleets,
    /// `aws ec2 describe-spot-fleet-requests`.
    SpotFleetRequests,
    /// `aws autoscaling describe-auto-scaling-groups`.
    AutoScalingGroups,
    /// `aws batch describe-compute-environments`.
    ComputeEnvironments,
    /// `aws imagebuilder list-image-recipes`.
    ImageRecipes,
    /// `aws cloudformation describe-stacks`.
    CloudFormationStacks,
    /// `aws emr describe-cluster` (one document per cluster).
    EmrClusters,
    /// `aws ec2 describe-spot-instance-requests`.
    SpotInstanceRequests,
    /// `aws cloudformation get-template` (one file per stack).
    CloudFormationTemplate,
}

const KINDS: [Kind; 16] = [
    Kind::Images,
    Kind::Instances,
    Kind::LaunchTemplateVersions,
    Kind::LaunchConfigurations,
    Kind::Snapshots,
    Kind::ImageReferences,
    Kind::SsmParameters,
    Kind::Fleets,
    Kind::SpotFleetRequests,
    Kind::AutoScalingGroups,
    Kind::ComputeEnvironments,
    Kind::ImageRecipes,
    Kind::CloudFormationStacks,
    Kind::EmrClusters,
    Kind::SpotInstanceRequests,
    Kind::CloudFormationTemplate,
];

impl Kind {
    /// The top-level key of the command's output.
    pub fn key(self) -> &'static str {
        match self {
            Self::Images => "Images",
            Self::Instances => "Reservations",
            Self::LaunchTemplateVersions => "LaunchTemplateVersions",
            Self::LaunchConfigurations => "LaunchConfigurations",
            Self::Snapshots => "Snapshots",
            Self::ImageReferences => "ImageReferences",
            Self::SsmParameters => "Parameters",
            Self::Fleets => "Fleets",
            Self::SpotFleetRequests => "SpotFleetRequestConfigs",
            Self::AutoScalingGroups => "AutoScalingGroups",
            Self::ComputeEnvironments => "computeEnvironments",
            Self::ImageRecipes => "imageRecipeSummaryList",
            Self::CloudFormationStacks => "Stacks",
            Self::EmrClusters => "Cluster",
            Self::SpotInstanceRequests => "SpotInstanceRequests",
            Self::CloudFormationTemplate => "TemplateBody",
        }
    }

    /// The command that prints it.
    pub fn command(self) -> &'static str {
        match self {
            Self::Images => "describe-images",
            Self::Instances => "describe-instances",
            Self::LaunchTemplateVersions => "describe-launch-template-versions",
            Self::LaunchConfigurations => "describe-launch-configurations",
            Self::Snapshots => "describe-snapshots",
            Self::ImageReferences => "describe-image-references",
            Self::SsmParameters => "get-parameters-by-path",
            Self::Fleets => "describe-fleets",
            Self::SpotFleetRequests => "describe-spot-fleet-requests",
            Self::AutoScalingGroups => "describe-auto-scaling-groups",
            Self::ComputeEnvironments => "describe-compute-environments",
            Self::ImageRecipes => "list-image-recipes",
            Self::CloudFormationStacks => "describe-stacks",
            Self::EmrClusters => "describe-cluster",
            Self::SpotInstanceRequests => "describe-spot-instance-requests",
            Self::CloudFormationTemplate => "get-template",
        }
    }

    /// The `plan` flag that takes it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Images => "--images",
            Self::Instances => "--instances",
            Self::LaunchTemplateVersions => "--launch-templates",
            Self::LaunchConfigurations => "--launch-configurations",
            Self::Snapshots => "--snapshots",
            Self::ImageReferences => "--image-references",
            Self::SsmParameters => "--ssm-parameters",
            Self::Fleets => "--fleets",
            Self::SpotFleetRequests => "--spot-fleet-requests",
            Self::AutoScalingGroups => "--auto-scaling-groups",
            Self::ComputeEnvironments => "--batch-compute-environments",
            Self::ImageRecipes => "--image-recipes",
            Self::CloudFormationStacks => "--cloudformation-stacks",
            Self::EmrClusters => "--emr-clusters",
            Self::SpotInstanceRequests => "--spot-instance-requests",
            Self::CloudFormationTemplate => "--cloudformation-templates",
        }
    }
}

/// The file's bytes as text: UTF-8, with or without a byte-order mark. UTF-16 (what
/// Windows PowerShell's `>` writes) is named, with how to write UTF-8 instead.
pub fn decode(source: &str, bytes: Vec<u8>) -> Result<String, InputError> {
    let utf16 = bytes.starts_with(&[0xFF, 0xFE])
        || bytes.starts_with(&[0xFE, 0xFF])
        || (bytes.len() >= 2 && (bytes[0] == 0 || bytes[1] == 0));
    if utf16 {
        return Err(super::err(
            source,
            "the file is UTF-16 (as Windows PowerShell's `>` writes it); write UTF-8 instead, e.g. \
             `aws ... | Out-File -Encoding utf8 FILE`, or redirect from cmd.exe or a Unix shell"
                .into(),
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        super::err(
            source,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.starts_with('\u{FEFF}') {
        text.drain(..'\u{FEFF}'.len_utf8());
    }
    Ok(text)
}

/// One top-level document: the expected key's value, whether it was truncated, and the
/// other keys seen (to say what the document looks like when the key is missing).
struct Document<T> {
    body: Option<T>,
    next_token: bool,
    keys: Vec<String>,
}

struct DocumentSeed<T>(&'static str, PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> DeserializeSeed<'de> for DocumentSeed<T> {
    type Value = Document<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for DocumentSeed<T> {
    type Value = Document<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a JSON object with \"{}\", as the AWS CLI prints it",
            self.0
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut doc = Document {
            body: None,
            next_token: false,
            keys: Vec::new(),
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == self.0 {
                if doc.body.is_some() {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                doc.body = Some(map.next_value()?);
            } else if key == "NextToken" || key == "nextToken" {
                let token: Option<String> = map.next_value()?;
                doc.next_token = token.is_some_and(|t| !t.is_empty());
            } else {
                map.next_value::<IgnoredAny>()?;
                doc.keys.push(key);
            }
        }
        Ok(doc)
    }
}

/// What a document without the expected key looks like, in words.
fn looks_like(keys: &[String]) -> String {
    let has = |k: &str| keys.iter().any(|x| x == k);
    if let Some(kind) = KINDS.iter().find(|k| has(k.key())) {
        return format!("this looks like {} output", kind.command());
    }
    if has("LaunchTemplates") {
        return "this looks like describe-launch-templates output (templates, not their versions)"
            .into();
    }
    if has("data") && (has("status_code") || has("status")) {
        return "this looks like a recorded SDK response wrapper (status_code, data); \
                pass the response body (its \"data\") alone"
            .into();
    }
    if keys.is_empty() {
        return "the document is an empty object".into();
    }
    let shown: Vec<&str> = keys.iter().map(String::as_str).take(6).collect();
    format!("the document has keys [{}]", shown.join(", "))
}

/// Reads every document of `kind` in `text` (one, or several concatenated) and returns
/// their bodies in order. Anything else is an error naming the file and what was found.
pub fn documents<T: DeserializeOwned>(
    source: &str,
    text: &str,
    kind: Kind,
) -> Result<Vec<T>, InputError> {
    let fail = |m: String| super::err(source, m);
    let mut de = serde_json::Deserializer::from_str(text);
    let mut bodies = Vec::new();
    loop {
        if de.end().is_ok() {
            break;
        }
        let n = bodies.len() + 1;
        let doc = match DocumentSeed::<T>(kind.key(), PhantomData).deserialize(&mut de) {
            Ok(doc) => doc,
            Err(_) if n > 1 => return Err(fail(trailing(text, n, kind))),
            Err(_) => return Err(fail(with_path::<T>(text, kind))),
        };
        let Some(body) = doc.body else {
            return Err(fail(format!(
                "{}{}; {} expects {} output (an object with \"{}\")",
                if n > 1 {
                    format!("document {n}: ")
                } else {
                    String::new()
                },
                looks_like(&doc.keys),
                kind.flag(),
                kind.command(),
                kind.key()
            )));
        };
        if doc.next_token {
            return Err(fail(format!(
                "{}the output is truncated (it has a NextToken); run `aws ... {}` again without \
                 --max-items or --no-paginate so that the CLI fetches every page",
                if n > 1 {
                    format!("document {n}: ")
                } else {
                    String::new()
                },
                kind.command()
            )));
        }
        bodies.push(body);
    }
    if bodies.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    Ok(bodies)
}

/// The error of the first document, with the path of the offending field.
fn with_path<T: DeserializeOwned>(text: &str, kind: Kind) -> String {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let seed = DocumentSeed::<T>(kind.key(), PhantomData);
    match seed.deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track)) {
        Err(e) => format!("{}: {e}", track.path()),
        Ok(_) => "the document does not parse".into(),
    }
}

/// What follows document `n - 1` when it is not another document of the same kind.
fn trailing(text: &str, n: usize, kind: Kind) -> String {
    // Find where the valid documents end, to quote what follows.
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<IgnoredAny>();
    for _ in 1..n {
        let _ = stream.next();
    }
    let at = stream.byte_offset();
    if let Some(Ok(_)) = stream.next() {
        return format!("document {n} is JSON but not {} output", kind.command());
    }
    let rest = text[at..].trim_start();
    let line = text[..at].lines().count().max(1);
    let quote: String = rest.chars().take(40).collect();
    format!(
        "unexpected content after the JSON document (line {line}): {quote:?}; a file may hold \
         several documents of the same kind, nothing else"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    type Body = Vec<serde_json::Value>;

    fn read(text: &str, kind: Kind) -> Result<Vec<Body>, String> {
        documents::<Body>("f.json", text, kind).map_err(|e| e.to_string())
    }

    #[test]
    fn shapes_encodings_concatenation_and_truncation() {
        assert_eq!(read(r#"{"Images": [1]}"#, Kind::Images).unwrap().len(), 1);
        assert_eq!(
            read("{\"Images\": [1]}\n{\"Images\": [2, 3]}\n", Kind::Images).unwrap(),
            vec![
                vec![serde_json::json!(1)],
                vec![serde_json::json!(2), serde_json::json!(3)]
            ]
        );
        let cases = [
            ("{}", Kind::Instances, "f.json: the document is an empty object; --instances expects describe-instances output (an object with \"Reservations\")"),
            (r#"{"Images": []}"#, Kind::Instances, "f.json: this looks like describe-images output; --instances expects describe-instances output (an object with \"Reservations\")"),
            (r#"{"status_code": 200, "data": {"Reservations": []}}"#, Kind::Instances, "f.json: this looks like a recorded SDK response wrapper (status_code, data); pass the response body (its \"data\") alone; --instances expects describe-instances output (an object with \"Reservations\")"),
            (r#"{"LaunchTemplates": []}"#, Kind::LaunchTemplateVersions, "f.json: this looks like describe-launch-templates output (templates, not their versions); --launch-templates expects describe-launch-template-versions output (an object with \"LaunchTemplateVersions\")"),
            ("{\"LaunchTemplateVersions\": []}\n{\"Reservations\": []}", Kind::LaunchTemplateVersions, "f.json: document 2: this looks like describe-instances output; --launch-templates expects describe-launch-template-versions output (an object with \"LaunchTemplateVersions\")"),
            (r#"{"Images": [], "NextToken": "abc"}"#, Kind::Images, "f.json: the output is truncated (it has a NextToken); run `aws ... describe-images` again without --max-items or --no-paginate so that the CLI fetches every page"),
            ("{\"Images\": []}\nAn error occurred (ExpiredToken)", Kind::Images, "f.json: unexpected content after the JSON document (line 1): \"An error occurred (ExpiredToken)\"; a file may hold several documents of the same kind, nothing else"),
            ("", Kind::Images, "f.json: the file is empty"),
            ("[]", Kind::Images, "f.json: .: invalid type: sequence, expected a JSON object with \"Images\", as the AWS CLI prints it at line 1 column 0"),
        ];
        for (text, kind, expected) in cases {
            assert_eq!(read(text, kind).unwrap_err(), expected, "{text}");
        }
        assert_eq!(
            read(r#"{"Images": [], "NextToken": null}"#, Kind::Images)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(decode("f", b"\xEF\xBB\xBF{}".to_vec()).unwrap(), "{}");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("{}".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert!(decode("f", utf16)
            .unwrap_err()
            .to_string()
            .contains("UTF-16"));
        assert!(decode("f", b"{\xFF}".to_vec())
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
    }
}
