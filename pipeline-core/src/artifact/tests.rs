use std::fs;
use std::time::{Duration, SystemTime};

use super::*;

fn tree(root: &Path, stamp: SystemTime) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("public/css")).unwrap();
    fs::write(root.join("server.js"), "console.log('hi')\n").unwrap();
    fs::write(root.join("public/css/site.css"), "body{}\n").unwrap();
    fs::write(root.join("bin/start"), "#!/bin/sh\nexec node server.js\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("bin/start"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("server.js", root.join("main.js")).unwrap();
    }
    for file in ["server.js", "public/css/site.css", "bin/start"] {
        File::options()
            .write(true)
            .open(root.join(file))
            .unwrap()
            .set_modified(stamp)
            .unwrap();
    }
}

#[test]
fn the_same_tree_with_other_mtimes_packs_to_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    tree(&a, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    tree(&b, SystemTime::now());
    let packed_a = Artifact::pack(&a, "build.artifact", 1 << 20).unwrap();
    let packed_b = Artifact::pack(&b, "build.artifact", 1 << 20).unwrap();
    assert_eq!(packed_a.sha256, packed_b.sha256);
    assert_eq!(packed_a.size, packed_b.size);
    assert_eq!(packed_a.sha256.len(), 64);
    assert_eq!(digest_file(packed_a.path()).unwrap(), packed_a.sha256);
    assert_eq!(
        packed_a.key("shop", "abc"),
        format!("artifacts/shop/abc/{}.tar.gz", packed_a.sha256)
    );

    // Another byte changes it.
    fs::write(b.join("server.js"), "console.log('hi!')\n").unwrap();
    let changed = Artifact::pack(&b, "build.artifact", 1 << 20).unwrap();
    assert_ne!(changed.sha256, packed_a.sha256);
}

#[test]
fn packing_keeps_modes_and_links_and_sorts_entries() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dist");
    tree(&src, SystemTime::now());
    let packed = Artifact::pack(&src, "build.artifact", 1 << 20).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        File::open(packed.path()).unwrap(),
    ));
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        assert_eq!(header.mtime().unwrap(), PACKED_MTIME);
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        #[cfg(unix)]
        if name == "bin/start" {
            assert_eq!(header.mode().unwrap(), 0o750);
        }
        #[cfg(unix)]
        if name == "main.js" {
            assert_eq!(header.entry_type(), tar::EntryType::Symlink);
            assert_eq!(
                entry.link_name().unwrap().unwrap().to_string_lossy(),
                "server.js"
            );
        }
        names.push(name);
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        names.contains(&"public/css/site.css".to_string()),
        "{names:?}"
    );
}

#[test]
fn a_tarball_is_taken_as_it_is_and_another_file_is_packed() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("app.tgz");
    fs::write(&tarball, b"not really gzip, but bytes").unwrap();
    let taken = Artifact::pack(&tarball, "--artifact", 1 << 20).unwrap();
    assert_eq!(taken.path(), tarball);
    assert_eq!(taken.size, 26);
    let jar = dir.path().join("app.jar");
    fs::write(&jar, b"PK...").unwrap();
    let packed = Artifact::pack(&jar, "--artifact", 1 << 20).unwrap();
    assert_ne!(packed.path(), jar);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        File::open(packed.path()).unwrap(),
    ));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["app.jar"]);
    // The temporary file goes with the artifact.
    let temp = packed.path().to_path_buf();
    drop(packed);
    assert!(!temp.exists());
}

#[test]
fn missing_empty_and_oversized_artifacts_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let message = |path: &Path, limit| {
        Artifact::pack(path, "build.artifact", limit)
            .unwrap_err()
            .to_string()
    };
    let missing = message(&dir.path().join("dist"), 1 << 20);
    assert!(
        missing.contains("build.artifact:") && missing.contains("does not exist"),
        "{missing}"
    );
    fs::create_dir_all(dir.path().join("empty/sub")).unwrap();
    let empty = message(&dir.path().join("empty"), 1 << 20);
    assert!(empty.contains("holds no files"), "{empty}");
    fs::write(dir.path().join("zero.jar"), b"").unwrap();
    assert!(message(&dir.path().join("zero.jar"), 1 << 20).contains("is empty"));
    let big = dir.path().join("big");
    fs::create_dir_all(&big).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(big.join("blob"), noise).unwrap();
    let over = message(&big, 10_000);
    assert!(
        over.contains("more than build.artifact_limit (9.8 KiB)"),
        "{over}"
    );
    assert!(matches!(
        Artifact::pack(&big, "build.artifact", 10_000),
        Err(Error::Input(_))
    ));
}
