//! The builder's user-data: the provisioning script, wrapped so that it
//! reports how it ended on the console and powers the machine off (the
//! stopped disk is what becomes the AMI).

use crate::error::{Error, Result};

/// The size EC2 accepts for user-data before base64 encoding.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// The console line the wrapper prints when the provisioning script fails.
pub const PROVISION_FAILED_MARKER: &str = "pipeline-provision: FAILED";

const PROVISION_DELIMITER: &str = "PIPELINE_PROVISION_EOF";

/// The user-data the builder runs: `script` (checked to start with a
/// shebang by the config) wrapped to report and power off. A script that
/// holds the wrapper's delimiter, or that makes user-data too big for EC2,
/// is a config error naming `build.provision`.
pub fn wrap(script: &str) -> Result<String> {
    let bad = |message: String| Error::Input(format!("build.provision: {message}"));
    if script.lines().any(|l| l.trim() == PROVISION_DELIMITER) {
        return Err(bad(format!(
            "the script must not contain a line {PROVISION_DELIMITER}"
        )));
    }
    let wrapped = format!(
        "#!/bin/sh
# pipeline builder: run the provisioning script, report, power off.
cat > /var/tmp/pipeline-provision <<'{PROVISION_DELIMITER}'
{script}
{PROVISION_DELIMITER}
chmod 0755 /var/tmp/pipeline-provision
/var/tmp/pipeline-provision
status=$?
if [ \"$status\" -eq 0 ]; then verdict='pipeline-provision: ok'; else verdict=\"{PROVISION_FAILED_MARKER} exit $status\"; fi
echo \"$verdict\"
echo \"$verdict\" > /dev/console 2>/dev/null || true
sync
poweroff || shutdown -h now
"
    );
    if wrapped.len() > USER_DATA_LIMIT {
        return Err(bad(format!(
            "the wrapped script is {} bytes; EC2 user-data takes at most {USER_DATA_LIMIT}. Move the bulk into a file your script downloads.",
            wrapped.len()
        )));
    }
    Ok(wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_reports_and_powers_off() {
        let user_data = wrap("#!/bin/bash\napt-get install -y nginx\n").unwrap();
        assert!(user_data.contains("apt-get install -y nginx"));
        assert!(user_data.contains("poweroff"));
        assert!(user_data.contains(PROVISION_FAILED_MARKER));
    }

    #[test]
    fn oversized_user_data_is_rejected() {
        let big = format!("#!/bin/bash\necho {}\n", "x".repeat(USER_DATA_LIMIT));
        let message = wrap(&big).unwrap_err().to_string();
        assert!(message.contains("at most 16384"), "{message}");
        let message = wrap("#!/bin/sh\nPIPELINE_PROVISION_EOF\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("must not contain"), "{message}");
    }
}
