//! Putting a tlite folder in place so that nothing is lost and nothing half-written ever loads.
//!
//! Files are written into a new hidden folder beside the target, each fsynced, `config.json` last (a folder
//! without it is not a model, so a partial one never loads); the folder is fsynced and renamed onto the target.
//! A target that exists is replaced only when it is empty or holds nothing but what `tlite quantize` writes;
//! anything else is refused before any work is done. Replacing a previous output takes two renames (old aside,
//! new in) and then deletes the old one: a crash between them leaves both complete folders, never a mixed one.

use super::{is_tlite_folder, TOKENIZER_FILES};
use crate::EngineError;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Names a tlite folder may hold: what [`super::save`] writes.
fn is_ours(name: &str) -> bool {
    name == "config.json" || name == "model.safetensors" || TOKENIZER_FILES.contains(&name)
}

/// What is at the target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Absent,
    EmptyFolder,
    TliteOutput,
}

/// The absolute path `out` names, with symbolic links resolved as far as it exists (so two spellings of one folder
/// compare equal). A part that does not exist yet has no links to resolve, so `..` there is removed by hand.
pub(crate) fn resolve(out: &Path) -> Result<PathBuf, EngineError> {
    let absolute = if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| EngineError::io(out, e))?
            .join(out)
    };
    let mut existing = absolute.as_path();
    let mut rest: Vec<Component<'_>> = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut p = c;
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        p.pop();
                    }
                    Component::CurDir => {}
                    other => p.push(other.as_os_str()),
                }
            }
            return Ok(p);
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return Ok(absolute),
        }
    }
}

/// Refuses an output that is, contains or lies inside one of `inputs` (the files and folders a command reads), or
/// that exists and is neither empty nor an earlier tlite output: what [`super::save_to`] would refuse at the end,
/// said before any work is done.
pub fn check_output(inputs: &[&Path], out: &Path) -> Result<(), EngineError> {
    let out_abs = resolve(out)?;
    for input in inputs {
        let inp = input
            .canonicalize()
            .map_err(|e| EngineError::io(input, e))?;
        let why = if out_abs == inp {
            "is"
        } else if out_abs.starts_with(&inp) {
            "lies inside"
        } else if inp.starts_with(&out_abs) {
            "contains"
        } else {
            continue;
        };
        return Err(EngineError::Model(format!(
            "the output {} {why} the input {}: choose an output folder apart from the model it is made from",
            out.display(),
            input.display()
        )));
    }
    inspect(&out_abs).map(|_| ())
}

/// What `target` holds, or an error when replacing it could lose something that is not a tlite output.
fn inspect(target: &Path) -> Result<Existing, EngineError> {
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(EngineError::io(target, e)),
    };
    if !meta.is_dir() {
        return Err(EngineError::Model(format!(
            "{} exists and is not a folder; refusing to replace it",
            target.display()
        )));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(target).map_err(|e| EngineError::io(target, e))? {
        let entry = entry.map_err(|e| EngineError::io(target, e))?;
        let kind = entry
            .file_type()
            .map_err(|e| EngineError::io(entry.path(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !kind.is_file() || !is_ours(&name) {
            return Err(EngineError::Model(format!(
                "{} already holds `{name}`, which tlite quantize does not write; refusing to replace the \
                 folder (remove it or choose another output)",
                target.display()
            )));
        }
        names.push(name);
    }
    if names.is_empty() {
        return Ok(Existing::EmptyFolder);
    }
    if !is_tlite_folder(target) {
        return Err(EngineError::Model(format!(
            "{} is not a tlite quantised folder (no config.json marked tlite_format); refusing to replace it",
            target.display()
        )));
    }
    Ok(Existing::TliteOutput)
}

fn sync_folder(dir: &Path) -> Result<(), EngineError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| EngineError::io(dir, e))
}

/// The first free name `.<target>.<tag>-<pid>-<n>` beside `target`, created as a folder when `create`.
fn sibling(target: &Path, tag: &str, create: bool) -> Result<PathBuf, EngineError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let base = target
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    for n in 0..10_000 {
        let p = parent.join(format!(".{base}.{tag}-{}-{n}", std::process::id()));
        if create {
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(EngineError::io(&p, e)),
            }
        } else if std::fs::symlink_metadata(&p).is_err() {
            return Ok(p);
        }
    }
    Err(EngineError::Model(format!(
        "no free name for a temporary folder beside {}",
        target.display()
    )))
}

/// A folder being written beside its target; dropped before [`Staging::commit`], it is deleted.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staging {
    /// Checks that `target` may be replaced and creates the temporary folder beside it (and its parents).
    pub fn new(target: &Path) -> Result<Self, EngineError> {
        let target = resolve(target)?;
        inspect(&target)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
        }
        let dir = sibling(&target, "tlite-partial", true)?;
        Ok(Self {
            dir,
            target,
            committed: false,
        })
    }

    /// Writes `bytes` as `name` in the temporary folder and fsyncs it.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), EngineError> {
        let p = self.dir.join(name);
        std::fs::File::create(&p)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .map_err(|e| EngineError::io(&p, e))
    }

    /// Moves the finished folder onto the target (see the module comment for what a crash leaves).
    pub fn commit(mut self) -> Result<(), EngineError> {
        sync_folder(&self.dir)?;
        let parent = self.target.parent().unwrap_or(Path::new(".")).to_path_buf();
        // Checked again: the target may have changed during the (long) write.
        match inspect(&self.target)? {
            Existing::Absent => rename(&self.dir, &self.target)?,
            Existing::EmptyFolder => {
                std::fs::remove_dir(&self.target).map_err(|e| EngineError::io(&self.target, e))?;
                rename(&self.dir, &self.target)?;
            }
            Existing::TliteOutput => {
                let old = sibling(&self.target, "tlite-previous", false)?;
                rename(&self.target, &old)?;
                if let Err(e) = rename(&self.dir, &self.target) {
                    // Put the previous output back; if even that fails, the error names where it is.
                    return match rename(&old, &self.target) {
                        Ok(()) => Err(e),
                        Err(_) => Err(EngineError::Model(format!(
                            "{e}; the previous output is kept at {}",
                            old.display()
                        ))),
                    };
                }
                self.committed = true;
                sync_folder(&parent)?;
                std::fs::remove_dir_all(&old).map_err(|e| EngineError::io(&old, e))?;
            }
        }
        self.committed = true;
        sync_folder(&parent)
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), EngineError> {
    std::fs::rename(from, to).map_err(|e| {
        EngineError::Model(format!(
            "moving {} to {} failed: {e}",
            from.display(),
            to.display()
        ))
    })
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover hidden `.tlite-partial` folder has no config.json and never loads.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
