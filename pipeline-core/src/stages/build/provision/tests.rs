use std::path::Path;
use std::process::Command;

use super::*;
use crate::artifact::Artifact;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn bakes<'a>(artifact: Option<ArtifactFetch<'a>>) -> Bakes<'a> {
    Bakes {
        app: "shop",
        commit: COMMIT,
        artifact,
    }
}

#[test]
fn the_wrapper_reports_and_powers_off() {
    let user_data = wrap("#!/bin/bash\napt-get install -y nginx\n", &bakes(None)).unwrap();
    assert!(user_data.contains("apt-get install -y nginx"));
    assert!(user_data.contains("poweroff"));
    assert!(user_data.contains(PROVISION_FAILED_MARKER));
    assert!(user_data.contains(&format!("PIPELINE_COMMIT='{COMMIT}'")));
    assert!(!user_data.contains("PIPELINE_ARTIFACT"));
}

#[test]
fn oversized_user_data_is_rejected() {
    let big = format!("#!/bin/bash\necho {}\n", "x".repeat(USER_DATA_LIMIT));
    let message = wrap(&big, &bakes(None)).unwrap_err().to_string();
    assert!(message.contains("at most 16384"), "{message}");
    let message = wrap("#!/bin/sh\nPIPELINE_PROVISION_EOF\n", &bakes(None))
        .unwrap_err()
        .to_string();
    assert!(message.contains("must not contain"), "{message}");
    // Checked before any URL exists, with room for one.
    let near = format!("#!/bin/bash\necho {}\n", "x".repeat(USER_DATA_LIMIT - 2500));
    assert!(check(&near, "shop", None).is_ok());
    assert!(check(&near, "shop", Some("/opt/shop/release")).is_err());
}

/// What running the wrapper printed, and the unpacked tree's root.
struct Ran {
    stdout: String,
    success: bool,
    unpacked: std::path::PathBuf,
    provision_saw: String,
}

/// Runs the wrapper for real in `sh`, its absolute paths moved under a
/// temporary root, with `curl` answering with the file `served` and
/// `poweroff` a no-op.
fn run_wrapper(served: &Path, sha256: &str) -> Ran {
    let root = tempfile::tempdir().unwrap().keep();
    let bin = root.join("bin");
    let cloud = root.join("var/lib/cloud/instances/i-1");
    for dir in ["bin", "var/tmp", "etc/systemd/system", "opt"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::create_dir_all(cloud.join("scripts")).unwrap();
    for copy in [
        "user-data.txt",
        "user-data.txt.i",
        "obj.pkl",
        "scripts/part-001",
    ] {
        std::fs::write(cloud.join(copy), "the url").unwrap();
    }
    let stub = |name: &str, body: &str| {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    };
    stub(
        "curl",
        &format!(
            "while [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then shift; cp '{}' \"$1\"; fi; shift; done",
            served.display()
        ),
    );
    stub("poweroff", "exit 0");
    let url = SecretUrl::new("http://127.0.0.1:1/bucket/key?X-Amz-Signature=abc".into());
    let dir = root.join("opt/shop/release");
    let dir_text = dir.to_str().unwrap().to_string();
    let provision = format!(
        "#!/bin/sh\nprintf '%s %s %s %s' \"$PIPELINE_APP\" \"$PIPELINE_COMMIT\" \"$PIPELINE_ARTIFACT_SHA256\" \"$(cat \"$PIPELINE_ARTIFACT_DIR/server.js\")\" > '{}/saw'\n",
        root.display()
    );
    let user_data = wrap(
        &provision,
        &bakes(Some(ArtifactFetch {
            url: &url,
            sha256,
            dir: &dir_text,
        })),
    )
    .unwrap();
    let rooted = root.to_str().unwrap();
    let script = user_data
        .replace("/var/tmp", &format!("{rooted}/var/tmp"))
        .replace("/etc/systemd", &format!("{rooted}/etc/systemd"))
        .replace("/var/lib/cloud", &format!("{rooted}/var/lib/cloud"))
        .replace("/dev/console", "/dev/null");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    for copy in [
        "user-data.txt",
        "user-data.txt.i",
        "obj.pkl",
        "scripts/part-001",
    ] {
        assert!(
            !cloud.join(copy).exists(),
            "cloud-init's {copy} (it holds the URL) stays behind"
        );
    }
    let target =
        std::fs::read_to_string(root.join("etc/systemd/system/pipeline-ready.target")).unwrap();
    assert!(
        target.contains("ConditionPathExists=/etc/pipeline/environment"),
        "{target}"
    );
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/pipeline-ready.target")
            .symlink_metadata()
            .is_ok(),
        "the target starts at later boots"
    );
    Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        success: out.status.success(),
        provision_saw: std::fs::read_to_string(root.join("saw")).unwrap_or_default(),
        unpacked: dir,
    }
}

#[test]
fn the_builder_unpacks_a_verified_artifact_before_the_script_runs() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("server.js"), "hello").unwrap();
    let artifact = Artifact::pack(src.path(), "build.artifact", 1 << 20).unwrap();
    let ran = run_wrapper(artifact.path(), &artifact.sha256);
    assert!(ran.success, "{}", ran.stdout);
    assert!(ran.stdout.contains(PROVISION_OK_MARKER), "{}", ran.stdout);
    assert_eq!(
        ran.provision_saw,
        format!("shop {COMMIT} {} hello", artifact.sha256)
    );
    assert!(ran.unpacked.join("server.js").exists());
    assert!(!ran.stdout.contains("X-Amz-Signature"), "{}", ran.stdout);
}

#[test]
fn a_wrong_digest_fails_the_bake_before_the_script_runs() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("server.js"), "hello").unwrap();
    let artifact = Artifact::pack(src.path(), "build.artifact", 1 << 20).unwrap();
    let expected = "f".repeat(64);
    let ran = run_wrapper(artifact.path(), &expected);
    assert!(!ran.success);
    let line = format!(
        "{PROVISION_FAILED_MARKER} artifact digest mismatch: expected {expected}, got {}",
        artifact.sha256
    );
    assert!(ran.stdout.contains(&line), "{}", ran.stdout);
    assert!(ran.provision_saw.is_empty(), "the script ran");
    assert!(!ran.unpacked.exists());
}
