//! The least-privilege IAM policy the configured stages need.
//!
//! One statement per purpose, each scoped as far as AWS allows: mutations of
//! instances, images and snapshots need the app's `pipeline:app` tag; tags
//! may only be written while creating (RunInstances, CreateImage, CopyImage,
//! CreateLaunchTemplateVersion); balancer, group and record changes name
//! their ARNs. Describe/List/Get calls cannot be scoped by resource in these
//! services and are granted on `*`. What is granted follows the config: no
//! Route53 without `promote`, no Auto Scaling without a group, and so on.

use serde_json::{Value, json};

use crate::config::{Config, Encryption, LoadBalancer};

/// One IAM statement: its id, actions, resources and optional condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The statement id, naming its purpose.
    pub sid: &'static str,
    /// `service:Action` names.
    pub actions: Vec<&'static str>,
    /// Resource ARNs (or `*`).
    pub resources: Vec<String>,
    /// An IAM condition block, if any.
    pub condition: Option<Value>,
}

/// The policy for `config`: the statements, in order.
pub fn policy(config: &Config) -> Vec<Statement> {
    let mut statements = images_and_instances(config);
    statements.extend(instance_roles(config));
    statements.extend(balancers(config));
    statements.extend(groups(config));
    statements.extend(state_bucket(config));
    statements.extend(record(config));
    statements.extend(alarms(config));
    statements.extend(encryption_key(config));
    statements
}

/// Reading the team's alarms: promote's watch and each environment's
/// deploy, by name.
fn alarms(config: &Config) -> Vec<Statement> {
    let mut names: Vec<&String> = config
        .promote
        .iter()
        .filter_map(|p| p.watch.as_ref())
        .flat_map(|w| &w.alarms)
        .chain(config.environments.values().flat_map(|e| &e.alarms))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Vec::new();
    }
    vec![Statement {
        sid: "WatchTheAlarms",
        actions: vec!["cloudwatch:DescribeAlarms"],
        resources: names
            .iter()
            .map(|a| format!("arn:aws:cloudwatch:{}:*:alarm:{a}", config.region))
            .collect(),
        condition: None,
    }]
}

/// Launching the builder with a volume encrypted with `build.kms_key`, and
/// copying the AMI with each region's key: EC2 uses the keys on the
/// caller's behalf (grants for the volumes, data keys for the snapshots).
/// Against moto this cannot be shown (its EC2 calls no KMS); it is the
/// real service's documented need.
fn encryption_key(config: &Config) -> Vec<Statement> {
    let Encryption::Key(key) = &config.build.shape.root_volume.encryption else {
        return vec![];
    };
    let actions = vec![
        "kms:CreateGrant",
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
    ];
    // IAM checks key operations against the key's ARN: a key given by
    // alias is matched through `kms:ResourceAliases`.
    let keys = std::iter::once((config.region.as_str(), key.as_str())).chain(
        config
            .build
            .copy_kms_keys
            .iter()
            .map(|(r, k)| (r.as_str(), k.as_str())),
    );
    let (mut arns, mut aliases) = (Vec::new(), Vec::new());
    for (region, key) in keys {
        if let Some(alias) = key.strip_prefix("alias/") {
            aliases.push(format!("alias/{alias}"));
        } else if let Some((_, alias)) = key.split_once(":alias/") {
            aliases.push(format!("alias/{alias}"));
        } else if key.starts_with("arn:") {
            arns.push(key.to_string());
        } else {
            arns.push(format!("arn:aws:kms:{region}:*:key/{key}"));
        }
    }
    let mut statements = Vec::new();
    if !arns.is_empty() {
        statements.push(Statement {
            sid: "EncryptWithTheKeys",
            actions: actions.clone(),
            resources: arns,
            condition: None,
        });
    }
    if !aliases.is_empty() {
        statements.push(Statement {
            sid: "EncryptWithTheAliasedKeys",
            actions,
            resources: vec!["*".into()],
            condition: Some(
                json!({ "ForAnyValue:StringEquals": { "kms:ResourceAliases": aliases } }),
            ),
        });
    }
    statements
}

/// The policy of the app and task instances' own role (`iam-policy --role
/// instances`): reading exactly the environments' secrets, and the verdict
/// a release task's instance tags itself with.
pub fn instance_policy(config: &Config) -> Vec<Statement> {
    let region = &config.region;
    let mut parameters: Vec<String> = config
        .environments
        .values()
        .flat_map(|e| e.secrets.values())
        .map(|s| format!("arn:aws:ssm:{region}:*:parameter{}", s.parameter))
        .collect();
    parameters.sort();
    parameters.dedup();
    let mut statements = Vec::new();
    if !parameters.is_empty() {
        statements.push(Statement {
            sid: "ReadTheSecrets",
            actions: vec!["ssm:GetParameter"],
            resources: parameters,
            condition: None,
        });
        // A SecureString under a customer managed key is decrypted through
        // SSM; under the default aws/ssm key no grant is needed.
        statements.push(Statement {
            sid: "DecryptTheSecrets",
            actions: vec!["kms:Decrypt"],
            resources: vec!["*".into()],
            condition: Some(json!({ "StringEquals": { "kms:ViaService": format!("ssm.{region}.amazonaws.com") } })),
        });
    }
    if config.environments.values().any(|e| !e.tasks.is_empty()) {
        statements.push(Statement {
            sid: "TaskVerdict",
            actions: vec!["ec2:CreateTags"],
            // Only the instance it runs on, only that key.
            resources: vec![format!("arn:aws:ec2:{region}:*:instance/*")],
            condition: Some(json!({
                "StringEquals": { "aws:ARN": "${ec2:SourceInstanceARN}" },
                "ForAllValues:StringEquals": { "aws:TagKeys": ["pipeline:task-exit"] }
            })),
        });
    }
    statements
}

/// The home region, then every copy region.
fn regions(config: &Config) -> Vec<String> {
    let mut regions = vec![config.region.clone()];
    regions.extend(config.build.copy_to_regions.iter().cloned());
    regions
}

/// Baking, launching and removing: every stage's EC2 calls on images and
/// instances, mutations scoped to the app's tag.
fn images_and_instances(config: &Config) -> Vec<Statement> {
    let app = &config.app;
    let regions = regions(config);
    let tagged = json!({ "StringEquals": { "aws:ResourceTag/pipeline:app": app } });
    vec![
        Statement {
            sid: "Read",
            actions: vec![
                "ec2:DescribeImages",
                "ec2:DescribeImageAttribute",
                "ec2:DescribeInstances",
                "ec2:GetConsoleOutput",
            ],
            resources: vec!["*".into()],
            condition: None,
        },
        Statement {
            sid: "LaunchInstances",
            actions: vec!["ec2:RunInstances"],
            resources: vec!["*".into()],
            condition: None,
        },
        Statement {
            sid: "TagOnCreate",
            actions: vec!["ec2:CreateTags"],
            resources: vec!["*".into()],
            condition: Some(json!({
                "StringEquals": {
                    "ec2:CreateAction": [
                        "RunInstances", "CreateImage", "CopyImage", "CreateLaunchTemplateVersion"
                    ]
                }
            })),
        },
        Statement {
            sid: "OwnInstances",
            actions: vec!["ec2:TerminateInstances"],
            resources: regions
                .iter()
                .take(1)
                .map(|r| format!("arn:aws:ec2:{r}:*:instance/*"))
                .collect(),
            condition: Some(tagged.clone()),
        },
        Statement {
            sid: "MakeImages",
            actions: vec!["ec2:CreateImage", "ec2:CopyImage"],
            resources: vec!["*".into()],
            condition: None,
        },
        Statement {
            sid: "OwnImages",
            actions: vec![
                "ec2:DeregisterImage",
                "ec2:DeleteSnapshot",
                "ec2:ModifyImageAttribute",
            ],
            resources: regions
                .iter()
                .flat_map(|r| {
                    [
                        format!("arn:aws:ec2:{r}::image/*"),
                        format!("arn:aws:ec2:{r}::snapshot/*"),
                    ]
                })
                .collect(),
            condition: Some(tagged),
        },
    ]
}

/// Passing the builder's and the instances' roles to EC2.
fn instance_roles(config: &Config) -> Vec<Statement> {
    let profiles: Vec<&String> = config
        .build
        .shape
        .instance_profile
        .iter()
        .chain(
            config
                .environments
                .values()
                .filter_map(|e| e.shape.instance_profile.as_ref()),
        )
        .collect();
    if profiles.is_empty() {
        return vec![];
    }
    // An instance profile holds one role; the policy names it by the
    // profile's name, as the console and most tools create them (if yours
    // differ, put the role's name in the resource): no other role passes.
    let mut roles: Vec<String> = profiles
        .iter()
        .map(|p| format!("arn:aws:iam::*:role/{p}"))
        .collect();
    roles.sort();
    roles.dedup();
    vec![Statement {
        sid: "PassInstanceRoles",
        actions: vec!["iam:PassRole"],
        resources: roles,
        condition: Some(json!({ "StringEquals": { "iam:PassedToService": "ec2.amazonaws.com" } })),
    }]
}

/// Reading health, and swapping instances in and out of the configured
/// balancers only.
fn balancers(config: &Config) -> Vec<Statement> {
    let region = &config.region;
    let mut statements = Vec::new();
    let classic: Vec<&String> = config
        .environments
        .values()
        .filter_map(|e| match &e.load_balancer {
            LoadBalancer::Classic(name) => Some(name),
            LoadBalancer::TargetGroup(_) => None,
        })
        .collect();
    let target_groups: Vec<&String> = config
        .environments
        .values()
        .filter_map(|e| match &e.load_balancer {
            LoadBalancer::TargetGroup(arn) => Some(arn),
            LoadBalancer::Classic(_) => None,
        })
        .collect();
    if !config.environments.is_empty() {
        statements.push(Statement {
            sid: "ReadBalancers",
            actions: vec![
                "elasticloadbalancing:DescribeInstanceHealth",
                "elasticloadbalancing:DescribeLoadBalancerAttributes",
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeTargetHealth",
                "elasticloadbalancing:DescribeTargetGroupAttributes",
                "elasticloadbalancing:DescribeTargetGroups",
            ],
            resources: vec!["*".into()],
            condition: None,
        });
    }
    if !classic.is_empty() {
        statements.push(Statement {
            sid: "SwapClassicElb",
            actions: vec![
                "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
            ],
            resources: classic
                .iter()
                .map(|name| format!("arn:aws:elasticloadbalancing:{region}:*:loadbalancer/{name}"))
                .collect(),
            condition: None,
        });
    }
    if !target_groups.is_empty() {
        statements.push(Statement {
            sid: "SwapTargetGroups",
            actions: vec![
                "elasticloadbalancing:RegisterTargets",
                "elasticloadbalancing:DeregisterTargets",
            ],
            resources: target_groups.iter().map(|arn| arn.to_string()).collect(),
            condition: None,
        });
    }
    statements
}

/// Deploying through the configured Auto Scaling groups only.
fn groups(config: &Config) -> Vec<Statement> {
    let region = &config.region;
    let mut statements = Vec::new();
    let groups: Vec<&str> = config
        .environments
        .values()
        .filter_map(|e| e.placement.group())
        .collect();
    if !groups.is_empty() {
        statements.push(Statement {
            sid: "ReadGroups",
            actions: vec!["autoscaling:DescribeAutoScalingGroups"],
            resources: vec!["*".into()],
            condition: None,
        });
        statements.push(Statement {
            sid: "DeployThroughGroups",
            actions: vec![
                "autoscaling:UpdateAutoScalingGroup",
                "autoscaling:SuspendProcesses",
                "autoscaling:ResumeProcesses",
                "autoscaling:DetachInstances",
                "autoscaling:CreateOrUpdateTags",
                "autoscaling:DeleteTags",
            ],
            resources: groups
                .iter()
                .map(|g| {
                    format!(
                        "arn:aws:autoscaling:{region}:*:autoScalingGroup:*:autoScalingGroupName/{g}"
                    )
                })
                .collect(),
            condition: None,
        });
        statements.push(Statement {
            sid: "LaunchTemplateVersions",
            actions: vec![
                "ec2:CreateLaunchTemplateVersion",
                "ec2:DescribeLaunchTemplateVersions",
            ],
            resources: vec![format!("arn:aws:ec2:{region}:*:launch-template/*")],
            condition: None,
        });
    }
    statements
}

/// The state bucket: this app's locks, queue, ledger and test verdicts.
fn state_bucket(config: &Config) -> Vec<Statement> {
    let app = &config.app;
    let mut statements = Vec::new();
    let bucket = &config.state.bucket;
    let prefix = &config.state.key_prefix;
    statements.push(Statement {
        sid: "StateObjects",
        actions: vec!["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
        resources: ["locks", "queue", "ledger", "tests"]
            .iter()
            .map(|dir| format!("arn:aws:s3:::{bucket}/{prefix}{dir}/{app}/*"))
            .collect(),
        condition: None,
    });
    // The builds: HeadObject and the presigned GET (signed with this
    // role, so the role must be allowed to read) are GetObject; a multipart upload is
    // PutObject, and AbortMultipartUpload when a part fails.
    statements.push(Statement {
        sid: "Artifacts",
        actions: vec!["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
        resources: vec![format!("arn:aws:s3:::{bucket}/{prefix}artifacts/{app}/*")],
        condition: None,
    });
    statements.push(Statement {
        sid: "StateListing",
        actions: vec!["s3:ListBucket"],
        resources: vec![format!("arn:aws:s3:::{bucket}")],
        condition: None,
    });
    statements
}

/// Flipping the public record, when promote is configured.
fn record(config: &Config) -> Vec<Statement> {
    let mut statements = Vec::new();
    if let Some(promote) = &config.promote {
        let zone = &promote.zone;
        statements.push(Statement {
            sid: "FlipTheRecord",
            actions: vec![
                "route53:ListResourceRecordSets",
                "route53:ChangeResourceRecordSets",
            ],
            resources: vec![format!("arn:aws:route53:::hostedzone/{zone}")],
            condition: None,
        });
        statements.push(Statement {
            sid: "WatchTheChange",
            actions: vec!["route53:GetChange"],
            resources: vec!["arn:aws:route53:::change/*".into()],
            condition: None,
        });
        if promote.watch.as_ref().is_some_and(|w| w.analysis.is_some()) {
            // GetMetricData takes no resource.
            statements.push(Statement {
                sid: "CompareTheSlots",
                actions: vec!["cloudwatch:GetMetricData"],
                resources: vec!["*".into()],
                condition: None,
            });
        }
    }
    statements
}

/// The policy as an IAM policy document.
pub fn document(statements: &[Statement]) -> Value {
    let statements: Vec<Value> = statements
        .iter()
        .map(|s| {
            let mut statement = json!({
                "Sid": s.sid,
                "Effect": "Allow",
                "Action": s.actions,
                "Resource": s.resources,
            });
            if let Some(condition) = &s.condition {
                statement["Condition"] = condition.clone();
            }
            statement
        })
        .collect();
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// Every `service:Action` the policy allows.
pub fn actions(statements: &[Statement]) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = statements
        .iter()
        .flat_map(|s| s.actions.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r##"
app: shop
region: us-east-1
state: { bucket: shop-state }
build:
  base_image: { id: ami-0123abcd }
  provision: "#!/bin/sh\n"
  copy_to_regions: [eu-west-1]
environments:
  staging:
    count: 1
    subnets: [subnet-0a]
    load_balancer: { classic: shop-staging }
  prod1:
    count: 2
    subnets: [subnet-0a]
    load_balancer: { target_group: "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/p1/1" }
  prod2:
    count: 2
    auto_scaling_group: shop-prod2
    load_balancer: { target_group: "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/p2/2" }
promote: { hosted_zone: Z123, record: www.example.com }
"##;

    #[test]
    fn grants_follow_the_config() {
        let config = Config::parse(CONFIG, "p.yaml").unwrap();
        let statements = policy(&config);
        let all = actions(&statements);
        for needed in [
            "ec2:RunInstances",
            "ec2:CreateImage",
            "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
            "elasticloadbalancing:RegisterTargets",
            "autoscaling:DetachInstances",
            "route53:ChangeResourceRecordSets",
        ] {
            assert!(all.contains(&needed), "{needed}");
        }
        let doc = document(&statements);
        let text = doc.to_string();
        assert!(text.contains("arn:aws:route53:::hostedzone/Z123"));
        assert!(text.contains("loadbalancer/shop-staging"));
        assert!(text.contains("autoScalingGroupName/shop-prod2"));
        assert!(
            text.contains("arn:aws:ec2:eu-west-1::image/*"),
            "copies can be cleaned up"
        );
        assert!(
            !text.contains("iam:PassRole"),
            "no instance profile configured"
        );

        // Without environments or promote: EC2, and the state bucket
        // (every stage takes a lock and writes the ledger).
        let lean =
            Config::parse(&CONFIG[..CONFIG.find("environments:").unwrap()], "p.yaml").unwrap();
        let state = [
            "s3:AbortMultipartUpload",
            "s3:DeleteObject",
            "s3:GetObject",
            "s3:ListBucket",
            "s3:PutObject",
        ];
        let lean = actions(&policy(&lean));
        assert!(
            lean.iter()
                .all(|a| a.starts_with("ec2:") || state.contains(a)),
            "{lean:?}"
        );
        assert!(state.iter().all(|a| lean.contains(a)), "{lean:?}");
    }

    #[test]
    fn the_instances_read_exactly_their_secrets_and_the_builder_s_key_is_granted() {
        let with = CONFIG
            .replace(
                "load_balancer: { classic: shop-staging }",
                "load_balancer: { classic: shop-staging }\n    secrets: { DATABASE_URL: \"ssm:/shop/staging/db\" }",
            )
            .replace(
                "  copy_to_regions: [eu-west-1]",
                "  copy_to_regions: [eu-west-1]\n  kms_key: alias/bake\n  copy_kms_keys: { eu-west-1: \"arn:aws:kms:eu-west-1:1:key/k\" }",
            );
        let config = Config::parse(&with, "p.yaml").unwrap();
        let instances = document(&instance_policy(&config)).to_string();
        assert!(
            instances.contains("arn:aws:ssm:us-east-1:*:parameter/shop/staging/db"),
            "{instances}"
        );
        assert!(!instances.contains("TaskVerdict"), "no tasks: {instances}");
        let pipeline = document(&policy(&config)).to_string();
        assert!(
            pipeline.contains(r#""kms:ResourceAliases":["alias/bake"]"#),
            "{pipeline}"
        );
        assert!(
            pipeline.contains("arn:aws:kms:eu-west-1:1:key/k"),
            "{pipeline}"
        );
        assert!(pipeline.contains("artifacts/shop/*"), "{pipeline}");
        let plain = Config::parse(CONFIG, "p.yaml").unwrap();
        assert!(instance_policy(&plain).is_empty());
        assert!(!document(&policy(&plain)).to_string().contains("kms:"));
    }
}
