//! An environment's settings as user-data: what makes one AMI run as
//! staging in one place and as prod1 in another.
//!
//! The script writes `/etc/pipeline/environment`, one `KEY='value'` a line,
//! which a shell can source and systemd reads with `EnvironmentFile=`.
//! Deploy gives it to every new instance; a release task's script starts
//! with it.

use std::collections::BTreeMap;

const SETTINGS_DELIMITER: &str = "PIPELINE_SETTINGS_EOF";

/// The user-data that writes `settings` of `app` in `env` (with
/// `PIPELINE_APP` and `PIPELINE_ENV`) to `/etc/pipeline/environment`.
pub fn user_data(app: &str, env: &str, settings: &BTreeMap<String, String>) -> String {
    let mut script = format!(
        "#!/bin/sh\n# pipeline: settings of {app} in {env}\nmkdir -p /etc/pipeline\ncat > /etc/pipeline/environment <<'{SETTINGS_DELIMITER}'\n"
    );
    script.push_str(&format!("PIPELINE_APP='{app}'\nPIPELINE_ENV='{env}'\n"));
    for (key, value) in settings {
        script.push_str(&format!("{key}='{}'\n", value.replace('\'', "'\\''")));
    }
    script.push_str(SETTINGS_DELIMITER);
    script.push('\n');
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_settings_become_user_data() {
        let settings = BTreeMap::from([
            ("RAILS_ENV".to_string(), "staging".to_string()),
            ("GREETING".to_string(), "it's".to_string()),
        ]);
        let data = user_data("shop", "staging", &settings);
        assert!(data.contains("PIPELINE_ENV='staging'\n"), "{data}");
        assert!(data.contains("RAILS_ENV='staging'\n"), "{data}");
        assert!(data.contains("GREETING='it'\\''s'\n"), "{data}");
        // The script is valid shell: run it with the file path rewritten.
        let dir = std::env::temp_dir().join(format!("pipeline-userdata-{}", std::process::id()));
        let script = data.replace("/etc/pipeline", dir.to_str().unwrap());
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {}/environment; printf %s \"$GREETING/$RAILS_ENV\"",
                dir.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's/staging");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
