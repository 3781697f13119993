//! transformers 5's `rope_parameters`, read as the keys earlier versions wrote.
//!
//! transformers 5 saves a model's rotary settings as one `rope_parameters` object (`rope_theta`, `rope_type`, the
//! scaling's own keys, Phi-3's `partial_rotary_factor`), or for Gemma 3 one object per layer type
//! (`full_attention`, `sliding_attention`), where earlier versions (and most configs on the Hub) wrote top-level
//! `rope_theta`, `rope_scaling`, `partial_rotary_factor` and `rope_local_base_freq`. Reading only the old keys would
//! run a transformers 5 folder at the default base of 10000 with no scaling, fluent-looking and wrong; so the new
//! object is translated into the old keys where those are absent (an explicit old key wins), and the rest of the
//! parser sees one layout.

use crate::EngineError;
use serde_json::{Map, Value};
use std::path::Path;

/// Fills `rope_theta`, `rope_scaling`, `partial_rotary_factor` and `rope_local_base_freq` of `config` from its
/// `rope_parameters`, where they are absent. Errors name the file: a `rope_parameters` that is not an object, or
/// scaling on Gemma 3's local layers (which rotate unscaled).
pub(crate) fn fill_legacy_rope_keys(config: &mut Value, path: &Path) -> Result<(), EngineError> {
    let err = |msg: String| EngineError::InvalidConfig(format!("{}: {msg}", path.display()));
    let params = match config.get("rope_parameters") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(o)) => o.clone(),
        Some(other) => {
            return Err(err(format!(
                "`rope_parameters` must be an object, got {other}"
            )))
        }
    };
    let per_layer_type = ["full_attention", "sliding_attention"]
        .iter()
        .any(|k| params.get(*k).is_some_and(Value::is_object));
    let (global, local) = if per_layer_type {
        let part = |k: &str| params.get(k).and_then(Value::as_object).cloned();
        (part("full_attention"), part("sliding_attention"))
    } else {
        (Some(params), None)
    };
    let Some(top) = config.as_object_mut() else {
        return Err(err("the config is not a JSON object".into()));
    };
    let mut set_absent = |key: &str, value: Option<&Value>| {
        if let Some(v) = value {
            if top.get(key).is_none_or(Value::is_null) {
                top.insert(key.to_string(), v.clone());
            }
        }
    };
    if let Some(g) = &global {
        set_absent("rope_theta", g.get("rope_theta"));
        set_absent("partial_rotary_factor", g.get("partial_rotary_factor"));
        if !is_default(g) {
            set_absent("rope_scaling", Some(&Value::Object(g.clone())));
        }
    }
    if let Some(l) = &local {
        if !is_default(l) {
            return Err(err(format!(
                "rope_parameters.sliding_attention: rope_type {} is not supported (local layers rotate unscaled)",
                rope_type(l).unwrap_or("?")
            )));
        }
        set_absent("rope_local_base_freq", l.get("rope_theta"));
    }
    Ok(())
}

fn rope_type(o: &Map<String, Value>) -> Option<&str> {
    o.get("rope_type")
        .or_else(|| o.get("type"))
        .and_then(Value::as_str)
}

fn is_default(o: &Map<String, Value>) -> bool {
    rope_type(o).is_none_or(|t| t == "default")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn fill(mut v: Value) -> Result<Value, EngineError> {
        fill_legacy_rope_keys(&mut v, Path::new("config.json")).map(|()| v)
    }

    #[test]
    fn a_flat_object_becomes_the_old_keys() {
        let v = fill(
            json!({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}),
        )
        .unwrap();
        assert_eq!(v["rope_theta"], json!(5e5));
        assert_eq!(v["rope_scaling"]["rope_type"], json!("llama3"));
        assert_eq!(v["rope_scaling"]["factor"], json!(8.0));

        let v = fill(
            json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                                "partial_rotary_factor": 0.75}}),
        )
        .unwrap();
        assert_eq!(v["rope_theta"], json!(1e6));
        assert_eq!(v["partial_rotary_factor"], json!(0.75));
        assert!(v.get("rope_scaling").is_none());
    }

    #[test]
    fn gemma3_objects_per_layer_type_give_both_bases() {
        let v = fill(json!({"rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}))
        .unwrap();
        assert_eq!(v["rope_theta"], json!(1e6));
        assert_eq!(v["rope_local_base_freq"], json!(1e4));
        assert_eq!(v["rope_scaling"]["rope_type"], json!("linear"));
    }

    #[test]
    fn old_keys_win_and_bad_values_are_named() {
        let v = fill(json!({"rope_theta": 1e4, "rope_parameters": {"rope_theta": 1e6}})).unwrap();
        assert_eq!(v["rope_theta"], json!(1e4));
        let e = fill(json!({"rope_parameters": 3})).unwrap_err().to_string();
        assert!(e.contains("`rope_parameters` must be an object"), "{e}");
        let e = fill(json!({"rope_parameters": {
            "full_attention": {"rope_theta": 1e6},
            "sliding_attention": {"rope_type": "yarn", "rope_theta": 1e4}}}))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sliding_attention: rope_type yarn"), "{e}");
    }
}
