//! An environment's settings as user-data: what makes one AMI run as
//! staging in one place and as prod1 in another.
//!
//! The script writes `/etc/pipeline/environment`, one `KEY='value'` a line,
//! which a shell can source and systemd reads with `EnvironmentFile=`.
//! Deploy gives it to every new instance; a release task's script starts
//! with it.

use std::collections::BTreeMap;

use crate::config::{EnvironmentConfig, SecretRef};

const SETTINGS_DELIMITER: &str = "PIPELINE_SETTINGS_EOF";

/// The console line the script prints when a secret cannot be read.
pub const SETTINGS_FAILED_MARKER: &str = "pipeline-settings: FAILED";

/// What an environment's instances are told at boot.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// The app (`PIPELINE_APP`).
    pub app: &'a str,
    /// The environment (`PIPELINE_ENV`).
    pub env: &'a str,
    /// The region the secrets are read in.
    pub region: &'a str,
    /// Plain settings: in the user-data as they are.
    pub settings: &'a BTreeMap<String, String>,
    /// Secrets: only the parameter names are in the user-data.
    pub secrets: &'a BTreeMap<String, SecretRef>,
    /// Whether to start `pipeline-ready.target` (and so the app's units)
    /// once the file is written: not on a release task's one-shot instance.
    pub start_app: bool,
}

/// The user-data that writes the settings (with `PIPELINE_APP` and
/// `PIPELINE_ENV`) to `/etc/pipeline/environment`, reads each secret from
/// SSM Parameter Store with the instance's own role (the AWS CLI, as on
/// Amazon Linux) into the same file, mode 0600 then, and starts
/// `pipeline-ready.target` once the file is whole: a unit `WantedBy=` that
/// target reads the file and never starts without it. A secret that cannot
/// be read is reported on the console and the target is not started (the
/// app stays down; its health checks fail the deploy); `settings_failed`
/// is then set for a task script that follows.
pub fn user_data(settings: &Settings<'_>) -> String {
    let Settings {
        app, env, region, ..
    } = settings;
    let file = "/etc/pipeline/environment";
    let mut script =
        format!("#!/bin/sh\n# pipeline: settings of {app} in {env}\nmkdir -p /etc/pipeline\n");
    if !settings.secrets.is_empty() {
        script.push_str("umask 077\n");
    }
    script.push_str(&format!("cat > {file}.new <<'{SETTINGS_DELIMITER}'\n"));
    script.push_str(&format!("PIPELINE_APP='{app}'\nPIPELINE_ENV='{env}'\n"));
    for (key, value) in settings.settings {
        script.push_str(&format!("{key}='{}'\n", quoted(value)));
    }
    script.push_str(SETTINGS_DELIMITER);
    script.push('\n');
    if !settings.secrets.is_empty() {
        script.push_str(&format!(
            "settings_failed=
secret() {{
  if value=$(aws ssm get-parameter --region '{region}' --with-decryption --name \"$2\" --query Parameter.Value --output text); then
    printf \"%s='%s'\\n\" \"$1\" \"$(printf '%s' \"$value\" | sed \"s/'/'\\\\\\\\''/g\")\" >> {file}.new
  else
    settings_failed=1
    echo \"{SETTINGS_FAILED_MARKER} cannot read secret $1 from SSM parameter $2\"
    echo \"{SETTINGS_FAILED_MARKER} cannot read secret $1 from SSM parameter $2\" > /dev/console 2>/dev/null || true
  fi
}}
"
        ));
        for (name, reference) in settings.secrets {
            script.push_str(&format!("secret {name} '{}'\n", reference.parameter));
        }
        script.push_str(&format!("chmod 0600 {file}.new\numask 022\n"));
    }
    // A file without a secret is never installed: the app (whose units
    // want pipeline-ready.target, which needs the file) stays down, now and
    // at the next boot.
    script.push_str(&format!(
        "if [ -z \"$settings_failed\" ]; then mv {file}.new {file}; else rm -f {file}.new; fi\n"
    ));
    if settings.start_app {
        script.push_str(
            "if [ -z \"$settings_failed\" ] && [ -f /etc/systemd/system/pipeline-ready.target ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl start --no-block pipeline-ready.target
fi
",
        );
    }
    script
}

/// The user-data of environment `env` of `config`; `start_app`: see
/// [`Settings::start_app`].
pub fn of_environment(
    config: &crate::config::Config,
    env: &str,
    e: &EnvironmentConfig,
    start_app: bool,
) -> String {
    user_data(&Settings {
        app: &config.app,
        env,
        region: &config.region,
        settings: &e.settings,
        secrets: &e.secrets,
        start_app,
    })
}

/// `value` for inside single quotes.
fn quoted(value: &str) -> String {
    value.replace('\'', "'\\''")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `data` in `sh` with `/etc/pipeline` moved under `dir` and
    /// `aws` a stub that prints `answer` (or fails when it is `None`);
    /// what the script printed.
    fn run(data: &str, dir: &std::path::Path, answer: Option<&str>) -> String {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let body = match answer {
            Some(value) => format!(
                "#!/bin/sh\necho \"$@\" >> '{}/aws-args'\nprintf '%s\\n' \"{value}\"\n",
                dir.display()
            ),
            None => "#!/bin/sh\nexit 255\n".to_string(),
        };
        std::fs::write(bin.join("aws"), body).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(bin.join("aws"))
            .status()
            .unwrap();
        let script = data
            .replace("/etc/pipeline", dir.join("etc").to_str().unwrap())
            .replace("/etc/systemd", dir.join("systemd").to_str().unwrap())
            .replace("/dev/console", "/dev/null");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{script}\necho \"failed=$settings_failed\""))
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sourced(dir: &std::path::Path, vars: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {}/etc/environment; printf %s \"{vars}\"",
                dir.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn environment_settings_become_user_data() {
        let settings = BTreeMap::from([
            ("RAILS_ENV".to_string(), "staging".to_string()),
            ("GREETING".to_string(), "it's".to_string()),
        ]);
        let none = BTreeMap::new();
        let data = user_data(&Settings {
            app: "shop",
            env: "staging",
            region: "us-east-1",
            settings: &settings,
            secrets: &none,
            start_app: true,
        });
        assert!(data.contains("PIPELINE_ENV='staging'\n"), "{data}");
        assert!(data.contains("RAILS_ENV='staging'\n"), "{data}");
        assert!(data.contains("GREETING='it'\\''s'\n"), "{data}");
        assert!(!data.contains("aws ssm"), "{data}");
        // The script is valid shell: run it with the file path rewritten.
        let dir = tempfile::tempdir().unwrap();
        run(&data, dir.path(), None);
        assert_eq!(sourced(dir.path(), "$GREETING/$RAILS_ENV"), "it's/staging");
    }

    #[test]
    fn secrets_are_read_at_boot_and_only_their_names_are_in_user_data() {
        let settings = BTreeMap::from([("RAILS_ENV".to_string(), "production".to_string())]);
        let secrets = BTreeMap::from([(
            "DATABASE_URL".to_string(),
            SecretRef::parse("ssm:/shop/prod/db_url").unwrap(),
        )]);
        let data = user_data(&Settings {
            app: "shop",
            env: "prod1",
            region: "eu-west-1",
            settings: &settings,
            secrets: &secrets,
            start_app: false,
        });
        assert!(!data.contains("pipeline-ready.target"), "{data}");
        assert!(
            data.contains("secret DATABASE_URL '/shop/prod/db_url'"),
            "{data}"
        );
        let dir = tempfile::tempdir().unwrap();
        let printed = run(&data, dir.path(), Some("postgres://u:it's@db/shop"));
        assert!(printed.contains("failed=\n"), "{printed}");
        assert_eq!(
            sourced(dir.path(), "$DATABASE_URL|$RAILS_ENV"),
            "postgres://u:it's@db/shop|production"
        );
        let args = std::fs::read_to_string(dir.path().join("aws-args")).unwrap();
        assert_eq!(
            args.trim(),
            "ssm get-parameter --region eu-west-1 --with-decryption --name /shop/prod/db_url --query Parameter.Value --output text"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("etc/environment"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // A secret that cannot be read: said on the console, flagged.
        let dir = tempfile::tempdir().unwrap();
        let printed = run(&data, dir.path(), None);
        assert!(
            printed.contains("pipeline-settings: FAILED cannot read secret DATABASE_URL from SSM parameter /shop/prod/db_url"),
            "{printed}"
        );
        assert!(printed.contains("failed=1"), "{printed}");
        assert!(
            !dir.path().join("etc/environment").exists(),
            "a file without its secret is installed"
        );
    }
}
