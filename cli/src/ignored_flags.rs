//! A note when `--weights`, `--group` or `--quantize-embeddings` are given for a model already quantised by
//! `tlite quantize`: its storage was fixed then, so the flags cannot apply, and silence would suggest they did.

use clap::parser::ValueSource;
use clap::ArgMatches;
use engine::model::{source_kind, SourceKind};
use std::path::PathBuf;

/// Flags that choose how weights are stored, by their argument id.
const STORAGE_FLAGS: [(&str, &str); 3] = [
    ("weights", "--weights"),
    ("group", "--group"),
    ("quantize_embeddings", "--quantize-embeddings"),
];

/// The note for a subcommand's matches, if the model is a tlite folder and storage flags were typed.
pub fn note(sub: &ArgMatches) -> Option<String> {
    let model = sub.try_get_one::<PathBuf>("model").ok().flatten()?;
    if source_kind(model).ok()? != SourceKind::Tlite {
        return None;
    }
    let given: Vec<&str> = STORAGE_FLAGS
        .iter()
        .filter(|(id, _)| {
            sub.try_contains_id(id).unwrap_or(false)
                && sub.value_source(id) == Some(ValueSource::CommandLine)
        })
        .map(|(_, flag)| *flag)
        .collect();
    (!given.is_empty()).then(|| {
        format!(
            "note: {} is already quantised by tlite quantize; {} ignored (quantise the source again to change \
             how weights are stored)",
            model.display(),
            match given.as_slice() {
                [one] => format!("{one} is"),
                many => format!("{} are", many.join(", ")),
            }
        )
    })
}
