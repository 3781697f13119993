//! Replacing a file so that a crash leaves the old one or the new one, never a half-written mix: write a temporary
//! file beside it, fsync it, rename it onto the target, fsync the folder.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::SessionFileError;

/// Deletes the temporary file unless it was renamed into place.
struct Temporary {
    path: PathBuf,
    kept: bool,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.kept {
            // Best effort: a leftover hidden `.tlite-tmp` file is never read as the session.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates the first free `.<name>.tlite-tmp-<pid>-<n>` beside `target`.
fn create_beside(target: &Path) -> Result<(File, Temporary), SessionFileError> {
    let parent = folder_of(target);
    let name = target
        .file_name()
        .map_or_else(|| "session".into(), |n| n.to_string_lossy().into_owned());
    for n in 0..10_000 {
        let path = parent.join(format!(".{name}.tlite-tmp-{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, Temporary { path, kept: false })),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(SessionFileError::io(&path, e)),
        }
    }
    Err(SessionFileError::io(
        target,
        std::io::Error::other("no free name for a temporary file beside it"),
    ))
}

/// The folder holding `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes the concatenation of `parts` to `target` atomically.
pub(super) fn write_file(target: &Path, parts: &[&[u8]]) -> Result<(), SessionFileError> {
    let (mut file, mut temp) = create_beside(target)?;
    let written = parts
        .iter()
        .try_for_each(|p| file.write_all(p))
        .and_then(|()| file.sync_all());
    written.map_err(|e| SessionFileError::io(&temp.path, e))?;
    drop(file);
    std::fs::rename(&temp.path, target).map_err(|e| SessionFileError::io(target, e))?;
    temp.kept = true;
    sync_folder(folder_of(target))
}

/// Makes the rename durable. Only Unix can open a folder to fsync it; elsewhere the rename is as durable as the
/// file system makes it.
fn sync_folder(dir: &Path) -> Result<(), SessionFileError> {
    if cfg!(unix) {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| SessionFileError::io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_target_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("chat.session");
        std::fs::write(&target, b"old").unwrap();
        write_file(&target, &[b"new ", b"contents"]).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("chat.session")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target's folder does not exist: the temporary file cannot be created, nothing is touched.
        let target = dir.path().join("missing").join("chat.session");
        assert!(write_file(&target, &[b"x"]).is_err());
        // A target that is a folder cannot be replaced by a file: the rename fails and the temporary file goes.
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inside"), b"kept").unwrap();
        assert!(write_file(&folder, &[b"x"]).is_err());
        assert_eq!(std::fs::read(folder.join("inside")).unwrap(), b"kept");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
