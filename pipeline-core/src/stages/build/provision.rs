//! The builder's user-data: the provisioning script, wrapped so that it
//! gets the commit's build and its identity, reports how it ended on the
//! console, and powers the machine off (the stopped disk is what becomes
//! the AMI).
//!
//! In order, the wrapper:
//! 1. exports `PIPELINE_APP` and `PIPELINE_COMMIT`;
//! 2. installs and enables the systemd target `pipeline-ready.target`,
//!    which an instance's user-data starts once `/etc/pipeline/environment`
//!    is written (see [`crate::stages::settings`]), and which starts at
//!    every later boot when the file is there (`ConditionPathExists`): a
//!    unit `WantedBy=` it never starts without the file;
//! 3. with an artifact: downloads it through its presigned URL (curl, or
//!    wget), checks its SHA-256, unpacks it into the artifact directory,
//!    exports `PIPELINE_ARTIFACT_DIR` and `PIPELINE_ARTIFACT_SHA256`, and
//!    deletes the archive; any step failing fails the bake;
//! 4. runs the script and prints its verdict, `pipeline-provision: ok` or
//!    [`PROVISION_FAILED_MARKER`] with the reason;
//! 5. removes cloud-init's copies of this user-data (the text, the pickled
//!    object and the script it ran: they hold the URL) and powers off.

use crate::error::{Error, Result};
use crate::ports::SecretUrl;

/// The size EC2 accepts for user-data before base64 encoding.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// The console line the wrapper prints when provisioning fails.
pub const PROVISION_FAILED_MARKER: &str = "pipeline-provision: FAILED";

/// The console line the wrapper prints when the script succeeded.
pub const PROVISION_OK_MARKER: &str = "pipeline-provision: ok";

/// The room kept for the presigned URL when the script is checked before
/// any URL exists (a URL signed with session credentials runs to ~1,500
/// characters).
const URL_ROOM: usize = 2048;

const PROVISION_DELIMITER: &str = "PIPELINE_PROVISION_EOF";

/// The commit's build, as the builder fetches it.
#[derive(Debug, Clone, Copy)]
pub struct ArtifactFetch<'a> {
    /// Where it is, signed: a bearer secret.
    pub url: &'a SecretUrl,
    /// Its hex SHA-256, checked before it is unpacked.
    pub sha256: &'a str,
    /// Where it is unpacked.
    pub dir: &'a str,
}

/// What the builder is given besides the script.
#[derive(Debug, Clone, Copy)]
pub struct Bakes<'a> {
    /// The app (`PIPELINE_APP`).
    pub app: &'a str,
    /// The commit (`PIPELINE_COMMIT`).
    pub commit: &'a str,
    /// The commit's build, if there is one.
    pub artifact: Option<ArtifactFetch<'a>>,
}

/// Checks that `script` can be wrapped, before any network call: the
/// delimiter, and the size with room for an artifact's URL.
pub fn check(script: &str, app: &str, artifact_dir: Option<&str>) -> Result<()> {
    let url = SecretUrl::new("x".repeat(URL_ROOM));
    let sha256 = "0".repeat(64);
    let artifact = artifact_dir.map(|dir| ArtifactFetch {
        url: &url,
        sha256: &sha256,
        dir,
    });
    let commit = "0".repeat(40);
    wrap(
        script,
        &Bakes {
            app,
            commit: &commit,
            artifact,
        },
    )
    .map(|_| ())
}

/// The user-data the builder runs: `script` (checked to start with a
/// shebang by the config) wrapped as the [module docs](self) say. A script
/// that holds the wrapper's delimiter, or that makes user-data too big for
/// EC2, is a config error naming `build.provision`.
pub fn wrap(script: &str, bakes: &Bakes<'_>) -> Result<String> {
    let bad = |message: String| Error::Input(format!("build.provision: {message}"));
    if script.lines().any(|l| l.trim() == PROVISION_DELIMITER) {
        return Err(bad(format!(
            "the script must not contain a line {PROVISION_DELIMITER}"
        )));
    }
    let Bakes { app, commit, .. } = bakes;
    let mut wrapped = format!(
        "#!/bin/sh
# pipeline builder: fetch the commit's build, run the provisioning script,
# report, power off.
PIPELINE_APP='{app}'
PIPELINE_COMMIT='{commit}'
export PIPELINE_APP PIPELINE_COMMIT
say() {{ echo \"$1\"; echo \"$1\" > /dev/console 2>/dev/null || true; }}
forget() {{ rm -rf /var/lib/cloud/instances/*/user-data.txt* /var/lib/cloud/instances/*/obj.pkl /var/lib/cloud/instances/*/scripts 2>/dev/null; }}
fail() {{ say \"{PROVISION_FAILED_MARKER} $1\"; forget; sync; poweroff || shutdown -h now; exit 1; }}
if [ -d /etc/systemd/system ]; then
  printf '[Unit]\\nDescription=pipeline: /etc/pipeline/environment is written\\nConditionPathExists=/etc/pipeline/environment\\n\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/pipeline-ready.target
  mkdir -p /etc/systemd/system/multi-user.target.wants
  ln -sf ../pipeline-ready.target /etc/systemd/system/multi-user.target.wants/pipeline-ready.target
fi
"
    );
    if let Some(artifact) = &bakes.artifact {
        wrapped.push_str(&format!(
            "PIPELINE_ARTIFACT_DIR='{dir}'
PIPELINE_ARTIFACT_SHA256='{sha256}'
export PIPELINE_ARTIFACT_DIR PIPELINE_ARTIFACT_SHA256
archive=/var/tmp/pipeline-artifact.tar.gz
# Presigned: expires with the bake's deadline.
PIPELINE_ARTIFACT_URL='{url}'
if command -v curl >/dev/null 2>&1; then
  curl -fsS --retry 5 -o \"$archive\" \"$PIPELINE_ARTIFACT_URL\" || fail \"artifact download failed (curl exit $?)\"
elif command -v wget >/dev/null 2>&1; then
  wget -q -O \"$archive\" \"$PIPELINE_ARTIFACT_URL\" || fail \"artifact download failed (wget exit $?)\"
else
  fail 'artifact download needs curl or wget on the base image'
fi
unset PIPELINE_ARTIFACT_URL
got=$(sha256sum \"$archive\" | cut -d ' ' -f 1)
[ \"$got\" = \"$PIPELINE_ARTIFACT_SHA256\" ] || fail \"artifact digest mismatch: expected $PIPELINE_ARTIFACT_SHA256, got $got\"
mkdir -p \"$PIPELINE_ARTIFACT_DIR\" && tar -xzf \"$archive\" -C \"$PIPELINE_ARTIFACT_DIR\" || fail 'artifact unpack failed'
rm -f \"$archive\"
say \"pipeline-provision: artifact $PIPELINE_ARTIFACT_SHA256 unpacked into $PIPELINE_ARTIFACT_DIR\"
",
            dir = artifact.dir,
            sha256 = artifact.sha256,
            url = artifact.url.expose(),
        ));
    }
    wrapped.push_str(&format!(
        "cat > /var/tmp/pipeline-provision <<'{PROVISION_DELIMITER}'
{script}
{PROVISION_DELIMITER}
chmod 0755 /var/tmp/pipeline-provision
/var/tmp/pipeline-provision
status=$?
[ \"$status\" -eq 0 ] || fail \"exit $status\"
say '{PROVISION_OK_MARKER}'
forget
sync
poweroff || shutdown -h now
"
    ));
    if wrapped.len() > USER_DATA_LIMIT {
        return Err(bad(format!(
            "the wrapped script is {} bytes; EC2 user-data takes at most {USER_DATA_LIMIT}. Move the bulk into the artifact.",
            wrapped.len()
        )));
    }
    Ok(wrapped)
}

#[cfg(test)]
mod tests;
