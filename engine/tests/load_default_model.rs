//! The bundled default model (fixtures/models/default) is exactly what the generator writes, and it loads with
//! its tokenizer.

#![allow(clippy::unwrap_used)]

mod load_common;

use engine::model::{load, LoadOptions};
use engine::tokenizer::Tokenizer;
use load_common::{tmp, to_ref};
use std::path::PathBuf;

fn bundled() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/default")
}

#[test]
fn bundled_default_model_matches_a_fresh_generation() {
    let fresh = tmp();
    let reference = fixtures::tiny_models::write_default_model(fresh.path()).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(fresh.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let a = std::fs::read(fresh.path().join(&name)).unwrap();
        let b = std::fs::read(bundled().join(&name)).unwrap_or_else(|e| {
            panic!("bundled file {name:?} unreadable ({e}); regenerate it (see its README)")
        });
        assert!(
            a == b,
            "bundled {name:?} differs from a fresh generation; regenerate it (see its README)"
        );
    }
    let m = load(&bundled(), &LoadOptions::default()).unwrap();
    let tok = Tokenizer::for_model(&bundled()).unwrap();
    tok.check_model_vocab(m.config.shape.vocab).unwrap();
    let ids = tok.encode("Once upon a time", true).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "Once upon a time");
    let logits = to_ref(&m).forward(&ids);
    let want = reference.forward(&ids);
    assert!(load_common::rel_rms(&want, &logits) < 5e-3);
}
