use super::*;
use std::time::Duration;

const GOOD: &str = r#"
app: shop
region: us-east-1
state:
  bucket: shop-pipeline-state
build:
  base_image: { owner: self, name: "debian-12-*" }
  subnet: subnet-0a1b2c
  provision: |
    #!/bin/bash
    apt-get install -y nginx
  timeout: 20m
  copy_to_regions: [eu-west-1]
  share_with: ["123456789012"]
environments:
  staging:
    count: 2
    subnets: [subnet-0a1b2c, subnet-0d4e5f]
    settings: { RAILS_ENV: staging }
    load_balancer: { classic: shop-staging }
"#;

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, "pipeline.yaml")
}

#[test]
fn the_documented_full_example_is_valid() {
    let doc = include_str!("../../../docs/configuration.md");
    let start = doc.find("```yaml\n").expect("a yaml block") + 8;
    let end = start + doc[start..].find("```").expect("its end");
    let config = parse(&doc[start..end]).unwrap();
    let tasks = &config.environments["prod1"].tasks;
    assert_eq!(tasks["migrate"].when, TaskWhen::BeforeTraffic);
    assert_eq!(tasks["migrate"].timeout, Duration::from_secs(20 * 60));
    assert_eq!(config.notify.len(), 2);
    assert_eq!(config.notify[0].events.len(), 4);
    assert_eq!(config.notify[1].events, EventKind::ALL);
    assert_eq!(config.notify[1].attempts, 3);
}

#[test]
fn tasks_and_webhooks_are_checked() {
    let with = |extra: &str| parse(&format!("{GOOD}{extra}"));
    let task = |body: &str| with(&format!("    tasks:\n      migrate:\n{body}"));
    assert!(task("        command: bin/migrate\n        when: before_launch\n").is_ok());
    let err = task("        command: \" \"\n").unwrap_err().to_string();
    assert!(
        err.contains("environments.staging.tasks.migrate.command"),
        "{err}"
    );
    let err = task("        command: x\n        when: later\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `later`"), "{err}");
    let err = with("    tasks:\n      Migrate: { command: x }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("environments.staging.tasks"), "{err}");

    let hook = |body: &str| with(&format!("notify:\n  - {body}\n"));
    assert!(hook("{ url: \"https://hooks.example.com/x\" }").is_ok());
    let err = hook("{ events: [failed] }").unwrap_err().to_string();
    assert!(err.contains("notify[0]: give the webhook's `url`"), "{err}");
    let err = hook("{ url: \"ftp://secret@host/path\" }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("notify[0].url: must start with https://"),
        "{err}"
    );
    assert!(
        !err.contains("secret@host"),
        "the URL may be a secret: {err}"
    );
    let err = hook("{ url_env: \"1BAD\" }").unwrap_err().to_string();
    assert!(err.contains("notify[0].url_env"), "{err}");
    let err = hook("{ url_env: HOOK, attempts: 0 }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("notify[0].attempts: must be 1 to 10"), "{err}");
    let err = hook("{ url_env: HOOK, events: [deployed] }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `deployed`"), "{err}");
}

fn message(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn parses_a_full_config_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.app, "shop");
    assert_eq!(
        c.build.base_image,
        BaseImage::Lookup {
            owner: "self".into(),
            name: "debian-12-*".into()
        }
    );
    assert_eq!(c.build.timeout, Duration::from_secs(1200));
    assert_eq!(c.build.image_timeout, Duration::from_secs(45 * 60));
    assert_eq!(c.build.shape.instance_type, "t3.micro");
    assert_eq!(c.environments["staging"].count, 2);
    assert!(c.build.provision.contains("apt-get install -y nginx"));
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = GOOD.replace("  timeout: 20m", "  timeout: 20m\n  timout: 5m");
    let m = message(&text);
    assert!(m.contains("unknown field `timout`"), "{m}");
    assert!(m.contains("line 13 column 3"), "{m}");
    assert!(m.starts_with("config pipeline.yaml:"), "{m}");
}

#[test]
fn unknown_key_in_environment_is_rejected() {
    let m = message(&GOOD.replace("count: 2", "count: 2\n    cuont: 3"));
    assert!(m.contains("unknown field `cuont`"), "{m}");
}

#[test]
fn missing_base_image_is_an_error() {
    let text = GOOD.replace("  base_image: { owner: self, name: \"debian-12-*\" }\n", "");
    assert!(message(&text).contains("missing field `base_image`"));
    let text = GOOD.replace("{ owner: self, name: \"debian-12-*\" }", "{ owner: self }");
    let m = message(&text);
    assert!(m.contains("both `owner` and `name`"), "{m}");
    assert!(m.contains("line 7"), "{m}");
    let text = GOOD.replace("{ owner: self, name: \"debian-12-*\" }", "{ id: ami-xyz }");
    assert!(message(&text).contains("build.base_image.id"));
}

#[test]
fn values_are_validated() {
    let cases = [
        ("app: shop", "app: Shop!", "app:"),
        ("region: us-east-1", "region: useast", "region:"),
        ("bucket: shop-pipeline-state", "bucket: S", "state.bucket"),
        ("timeout: 20m", "timeout: 20x", "not a duration"),
        ("timeout: 20m", "timeout: 0s", "build.timeout: must be more"),
        ("subnet: subnet-0a1b2c", "subnet: sn-1", "build.subnet"),
        ("[eu-west-1]", "[europe]", "build.copy_to_regions"),
        ("[\"123456789012\"]", "[\"1234\"]", "12-digit"),
        ("#!/bin/bash\n", "set -e\n", "shebang"),
        ("count: 2", "count: 0", "environments.staging.count"),
        ("RAILS_ENV: staging", "RAILS-ENV: x", "environment variable"),
        (
            "{ classic: shop-staging }",
            "{ classic: shop_staging }",
            "Classic ELB name",
        ),
        (
            "{ classic: shop-staging }",
            "{ target_group: tg-1 }",
            "target group ARN",
        ),
        ("{ classic: shop-staging }", "{ }", "give `classic: NAME`"),
    ];
    for (from, to, expect) in cases {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD, "{from}");
        let m = message(&text);
        assert!(m.contains(expect), "{to}: {m}");
    }
}

#[test]
fn provision_and_provision_file_are_exclusive() {
    let text = GOOD.replace("  timeout: 20m", "  timeout: 20m\n  provision_file: p.sh");
    assert!(message(&text).contains("not both"));
    let without = GOOD.replace(
        "  provision: |\n    #!/bin/bash\n    apt-get install -y nginx\n",
        "",
    );
    assert!(message(&without).contains("build.provision: missing"));
}

#[test]
fn load_reads_provision_file_relative_to_config() {
    let dir = std::env::temp_dir().join(format!("pipeline-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bake.sh"), "#!/bin/sh\necho baked\n").unwrap();
    let text = GOOD.replace(
        "  provision: |\n    #!/bin/bash\n    apt-get install -y nginx\n",
        "  provision_file: bake.sh\n",
    );
    std::fs::write(dir.join("pipeline.yaml"), text).unwrap();
    let c = Config::load(&dir.join("pipeline.yaml")).unwrap();
    assert!(c.build.provision.contains("echo baked"));
    std::fs::write(dir.join("bake.sh"), "echo no shebang\n").unwrap();
    let m = Config::load(&dir.join("pipeline.yaml"))
        .unwrap_err()
        .to_string();
    assert!(m.contains("shebang"), "{m}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_schema_mirrors_the_config() {
    let schema = schema();
    let text = schema.to_string();
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown keys are errors"
    );
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["app", "region", "state", "build"]);
    for key in ["environments", "promote", "build"] {
        assert!(schema["properties"][key].is_object(), "{key}");
    }
    let defs = &schema["$defs"];
    assert_eq!(defs["BuildConfig"]["additionalProperties"], false);
    assert!(
        defs["BuildConfig"]["properties"]["timeout"]
            .to_string()
            .contains("Duration")
    );
    assert!(defs["Duration"].to_string().contains("1h30m"));
    // base_image and load_balancer take the shape written in YAML.
    assert!(
        text.contains("\"owner\"") && text.contains("\"target_group\""),
        "{text}"
    );
    assert!(defs["RecordType"].to_string().contains("alias"));
    let env_required = defs["EnvironmentConfig"]["required"].to_string();
    assert!(env_required.contains("count") && env_required.contains("load_balancer"));
}

#[test]
fn an_environment_reads_its_balancer_and_defaults() {
    let c = parse(GOOD).unwrap();
    let env = &c.environments["staging"];
    assert_eq!(
        env.load_balancer,
        LoadBalancer::Classic("shop-staging".into())
    );
    assert_eq!(env.health_timeout, Duration::from_secs(600));
    assert_eq!(
        env.placement,
        Placement::Subnets(vec!["subnet-0a1b2c".into(), "subnet-0d4e5f".into()])
    );
    let grouped = parse(&GOOD.replace(
        "    subnets: [subnet-0a1b2c, subnet-0d4e5f]\n",
        "    auto_scaling_group: shop-staging\n",
    ))
    .unwrap();
    let placement = &grouped.environments["staging"].placement;
    assert_eq!(placement.group(), Some("shop-staging"));
    assert_eq!(placement.task_subnet(), None);
}

#[test]
fn a_bad_duration_is_reported_at_its_own_key_and_line() {
    let m = message(&GOOD.replace("timeout: 20m", "timeout: 20x"));
    assert!(
        m.contains("build.timeout: \"20x\" is not a duration"),
        "{m}"
    );
    assert!(m.contains("line 12 column 12"), "{m}");
    let m = message(&GOOD.replace("{ classic: shop-staging }", "shop-staging"));
    assert!(m.contains("`{ classic: NAME }`"), "{m}");
    assert!(!m.contains("Raw"), "no Rust type names: {m}");
}

#[test]
fn max_surge_is_a_number_or_a_share_of_count() {
    let surge = |value: &str, count: u32| {
        let text = GOOD.replace(
            "    count: 2\n",
            &format!("    count: {count}\n    max_surge: {value}\n"),
        );
        parse(&text).map(|c| c.environments["staging"].max_surge)
    };
    assert_eq!(parse(GOOD).unwrap().environments["staging"].max_surge, None);
    assert_eq!(surge("50", 200).unwrap(), Some(50));
    assert_eq!(surge("\"50\"", 200).unwrap(), Some(50));
    // More than count is allowed: the whole fleet in one batch.
    assert_eq!(surge("9", 2).unwrap(), Some(9));
    // A percentage of count, rounded up, at least 1.
    assert_eq!(surge("\"25%\"", 200).unwrap(), Some(50));
    assert_eq!(surge("\"25%\"", 10).unwrap(), Some(3));
    assert_eq!(surge("25%", 7).unwrap(), Some(2));
    assert_eq!(surge("\"1%\"", 5).unwrap(), Some(1));
    assert_eq!(surge("\"100%\"", 5).unwrap(), Some(5));

    let err = |value: &str| surge(value, 4).unwrap_err().to_string();
    let m = err("0");
    assert!(
        m.contains("environments.staging.max_surge: must be at least 1"),
        "{m}"
    );
    let m = err("\"0%\"");
    assert!(
        m.contains("environments.staging.max_surge: 0% is not a share"),
        "{m}"
    );
    let m = err("\"101%\"");
    assert!(m.contains("101% is not a share of count"), "{m}");
    for bad in ["-1", "\"lots\"", "\"2.5%\"", "1.5", "\"%\""] {
        let m = err(bad);
        assert!(
            m.contains("environments.staging.max_surge") && m.contains("line 18"),
            "{bad}: {m}"
        );
    }
}

#[test]
fn max_surge_with_an_auto_scaling_group_is_refused() {
    let text = GOOD.replace(
        "    subnets: [subnet-0a1b2c, subnet-0d4e5f]\n",
        "    auto_scaling_group: shop-staging\n    max_surge: 1\n",
    );
    let m = message(&text);
    assert!(
        m.contains("environments.staging.max_surge: applies to subnet placement only"),
        "{m}"
    );
    assert!(
        m.contains("Drop max_surge") && m.contains("instance refresh"),
        "{m}"
    );
    let schema = schema().to_string();
    assert!(
        schema.contains("max_surge") && schema.contains("MaxSurge"),
        "{schema}"
    );
}
