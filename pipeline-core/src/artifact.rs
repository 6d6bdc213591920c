//! The commit's build, packed for the builder: what CI made (`dist/`, a
//! tarball, a jar) as one gzipped tar named by its SHA-256.
//!
//! A directory is packed deterministically: entries in byte order of their
//! paths, every mtime fixed, modes kept, every entry owned by root (0:0, no
//! user or group names: a CI runner's uid means nothing on the builder, and
//! would make the digest differ from one runner to the next), a gzip header
//! without a name or time. So the same tree gives the same digest on any
//! machine and on any day, and a rebuild of a
//! commit finds its artifact already uploaded. A `.tar.gz` or `.tgz` file
//! is taken as it is; any other file is packed as a tarball of that file.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::format_size;
use crate::error::{Error, Result};

/// The mtime every packed entry carries (1980-01-01, as zip tools use: old
/// enough to say "not a real time", new enough for every unpacker).
const PACKED_MTIME: u64 = 315_532_800;

/// A packed artifact, ready to upload.
#[derive(Debug)]
pub struct Artifact {
    /// What was packed (as given).
    pub source: PathBuf,
    /// The hex SHA-256 of the packed bytes: the artifact's name.
    pub sha256: String,
    /// Its size, packed, in bytes.
    pub size: u64,
    file: Packed,
}

#[derive(Debug)]
enum Packed {
    /// The source itself was a tarball.
    Source(PathBuf),
    /// Packed into a temporary file, removed when the artifact is dropped.
    Temporary(tempfile::TempPath),
}

impl Artifact {
    /// The packed bytes, on disk.
    pub fn path(&self) -> &Path {
        match &self.file {
            Packed::Source(path) => path,
            Packed::Temporary(path) => path,
        }
    }

    /// Its key in the state bucket: `artifacts/<app>/<commit>/<sha256>.tar.gz`.
    pub fn key(&self, app: &str, commit: &str) -> String {
        format!("artifacts/{app}/{commit}/{}.tar.gz", self.sha256)
    }

    /// Packs `source` (see the [module docs](self)). A missing path, an
    /// empty directory or file, or a packed size over `limit` bytes is bad
    /// input naming `what` (the key or flag it came from).
    pub fn pack(source: &Path, what: &str, limit: u64) -> Result<Artifact> {
        let bad = |message: String| Error::Input(format!("{what}: {message}"));
        let shown = source.display();
        let meta = fs::metadata(source).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => bad(format!(
                "{shown} does not exist; build it before `pipeline build`, or fix the path"
            )),
            _ => bad(format!("cannot read {shown}: {e}")),
        })?;
        let too_big = |size: u64| {
            bad(format!(
                "{shown} packs to {}, more than build.artifact_limit ({}); raise the limit or ship less",
                format_size(size),
                format_size(limit)
            ))
        };
        let io_error = |e: io::Error| bad(format!("cannot pack {shown}: {e}"));
        if meta.is_file() {
            if meta.len() == 0 {
                return Err(bad(format!("{shown} is empty")));
            }
            let name = source.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
                if meta.len() > limit {
                    return Err(too_big(meta.len()));
                }
                let sha256 = digest_file(source).map_err(io_error)?;
                return Ok(Artifact {
                    source: source.to_path_buf(),
                    sha256,
                    size: meta.len(),
                    file: Packed::Source(source.to_path_buf()),
                });
            }
        } else if meta.is_dir() {
            if !has_files(source).map_err(io_error)? {
                return Err(bad(format!(
                    "{shown} holds no files; build it before `pipeline build`"
                )));
            }
        } else {
            return Err(bad(format!("{shown} is neither a file nor a directory")));
        }
        let temp = tempfile::Builder::new()
            .prefix("pipeline-artifact-")
            .suffix(".tar.gz")
            .tempfile()
            .map_err(io_error)?;
        let (file, path) = temp.into_parts();
        let mut out = Hashing::new(BufWriter::new(file), limit);
        let packed = write_tar(source, &meta, &mut out);
        match packed {
            Ok(()) => {}
            Err(_) if out.over_limit => return Err(too_big(out.written)),
            Err(e) => return Err(io_error(e)),
        }
        let (sha256, size) = out.finish().map_err(io_error)?;
        Ok(Artifact {
            source: source.to_path_buf(),
            sha256,
            size,
            file: Packed::Temporary(path),
        })
    }
}

/// Writes the gzipped tar of `source` into `out`.
fn write_tar(source: &Path, meta: &fs::Metadata, out: &mut impl Write) -> io::Result<()> {
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    tar.follow_symlinks(false);
    if meta.is_dir() {
        let mut entries = Vec::new();
        walk(source, Path::new(""), &mut entries)?;
        entries.sort_by(|a, b| {
            a.as_os_str()
                .as_encoded_bytes()
                .cmp(b.as_os_str().as_encoded_bytes())
        });
        for relative in entries {
            append(&mut tar, &source.join(&relative), &relative)?;
        }
    } else {
        let name = source.file_name().map(PathBuf::from).unwrap_or_default();
        append(&mut tar, source, &name)?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}

/// Every path under `dir` (relative to the packed root), directories included.
fn walk(root: &Path, relative: &Path, into: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        into.push(path.clone());
        if kind.is_dir() {
            walk(root, &path, into)?;
        }
    }
    Ok(())
}

fn has_files(dir: &Path) -> io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if !kind.is_dir() || has_files(&entry.path())? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One entry: its type and mode as on disk, owned by root, its mtime fixed.
fn append<W: Write>(tar: &mut tar::Builder<W>, path: &Path, name: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let mut header = tar::Header::new_gnu();
    header.set_mtime(PACKED_MTIME);
    header.set_mode(mode_of(&meta));
    header.set_uid(0);
    header.set_gid(0);
    let kind = meta.file_type();
    if kind.is_symlink() {
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, name, fs::read_link(path)?)
    } else if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        tar.append_data(&mut header, name, io::empty())
    } else if kind.is_file() {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        tar.append_data(&mut header, name, File::open(path)?)
    } else {
        Err(io::Error::other(format!(
            "{} is neither a file, a directory nor a symlink",
            path.display()
        )))
    }
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    meta.mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(meta: &fs::Metadata) -> u32 {
    if meta.is_dir() { 0o755 } else { 0o644 }
}

/// The hex SHA-256 of a file's bytes.
pub fn digest_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// A writer that hashes and counts what passes, and refuses past a limit.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
    limit: u64,
    over_limit: bool,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W, limit: u64) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            written: 0,
            limit,
            over_limit: false,
        }
    }

    fn finish(mut self) -> io::Result<(String, u64)> {
        self.inner.flush()?;
        Ok((format!("{:x}", self.hasher.finalize()), self.written))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if self.written > self.limit {
            self.over_limit = true;
            return Err(io::Error::other("over the artifact limit"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
