//! The command line's side of device profiles and the memory budget (issue 22): `tlite devices --profile`, the
//! load line, `--device-profile`, `TLITE_DEVICE_PROFILE` and `--mem-budget`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The bundled tiny model: its tokenizer and weights need no download.
fn tiny_model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models/default")
        .to_str()
        .unwrap()
        .to_string()
}

fn tlite(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlite"));
    cmd.args(args).env_remove("TLITE_DEVICE_PROFILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tlite")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The row of the limits table that starts with `label`, split into its columns (phone, this device, tlite uses).
fn row<'a>(table: &'a str, label: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` row in:\n{table}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .collect()
}

#[test]
fn devices_with_a_profile_shows_the_phone_beside_this_device() {
    let o = tlite(&["devices", "--profile", "adreno-750"], &[]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(
        out.starts_with("device profile adreno-750 (QUALCOMM Adreno(TM) 750)"),
        "{out}"
    );
    // Values from the dump, and the stricter of phone and host in the last column.
    assert_eq!(row(&out, "max allocation")[..2], ["1.0", "GiB"]);
    assert_eq!(row(&out, "local memory")[..2], ["32.0", "KiB"]);
    let wg = row(&out, "max work-group");
    assert_eq!(wg[0], "1024");
    let host: usize = wg[1].parse().unwrap();
    assert_eq!(wg[2].parse::<usize>().unwrap(), host.min(1024));
    // Not in the dump: phone-min's alignment, marked.
    assert_eq!(row(&out, "base-address align")[..2], ["1024", "bits*"]);
    assert!(
        out.contains("4.06 GiB on the phone (75% of 5.42 GiB global memory"),
        "{out}"
    );
    // On the phone itself: the Adreno path with sub-groups and fp16.
    assert!(out.contains("vendor path          Adreno"), "{out}");
    assert!(
        out.contains("TLITE_VENDOR_ADRENO=1 TLITE_HAS_FP16=1"),
        "{out}"
    );
    assert!(out.contains("emulating it on [0]"), "{out}");
    // The mat-vec variant for the phone (emulated here too where this device has images).
    assert!(out.contains("mat-vec kernels      AdrenoImage"), "{out}");

    let o = tlite(&["devices", "--profile", "mali-g710"], &[]);
    let out = text(&o.stdout);
    assert!(o.status.success());
    assert!(
        out.contains("mat-vec kernels      Mali: the profile's phone is a Mali"),
        "{out}"
    );

    let o = tlite(&["devices", "--profile", "adreno-750", "--json"], &[]);
    assert!(o.status.success());
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["profile"]["name"], "adreno-750");
    assert_eq!(json["limits_in_effect"]["max_alloc_bytes"], 1u64 << 30);
    assert_eq!(
        json["on_the_phone"]["capabilities"]["vendor_family"],
        "Adreno"
    );
    assert_eq!(json["on_the_phone"]["matvec_kernel"], "AdrenoImage");
    let emulated = &json["emulated"][0]["capabilities"];
    assert_eq!(emulated["profile"], "adreno-750");
    assert!(emulated["max_alloc_bytes"].as_u64().unwrap() <= 1 << 30);
}

#[test]
fn an_unknown_profile_lists_the_known_ones() {
    for args in [
        vec!["devices", "--profile", "adreno-9000"],
        vec![
            "generate",
            "--prompt",
            "x",
            "--device-profile",
            "adreno-9000",
        ],
    ] {
        let o = tlite(&args, &[]);
        let err = text(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains("unknown device profile `adreno-9000`"),
            "{err}"
        );
        assert!(
            err.contains("adreno-740, adreno-750, adreno-830, mali-g610-mc6, mali-g710, phone-min")
        );
    }
    let model = tiny_model();
    let o = tlite(
        &["generate", "--model", &model, "--prompt", "x"],
        &[("TLITE_DEVICE_PROFILE", "nokia-3310")],
    );
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("unknown device profile `nokia-3310`"));
}

#[test]
fn the_load_line_says_which_context_and_why() {
    let model = tiny_model();
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        "Once",
        "--max-tokens",
        "3",
    ];
    let o = tlite(&args, &[("TLITE_DEVICE_PROFILE", "phone-min")]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(text(&o.stdout).starts_with("Once"));
    let line = err
        .lines()
        .find(|l| l.contains("context "))
        .expect("a load line");
    for part in [
        "tokens (the model's maximum, which fits the budget)",
        "weights",
        "KV cache",
        "75% of 1.82 GiB global memory",
        "(as phone-min)",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    // The flag wins over the environment, and `none` turns the profile off.
    let mut with_flag = args.to_vec();
    with_flag.extend(["--device-profile", "none", "--ctx", "16"]);
    let o = tlite(&with_flag, &[("TLITE_DEVICE_PROFILE", "phone-min")]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("context 16 tokens (as requested)"), "{err}");
    assert!(!err.contains("as phone-min"), "{err}");
}

#[test]
fn a_too_small_budget_is_a_clear_error_naming_the_numbers() {
    let model = tiny_model();
    let o = tlite(
        &[
            "generate",
            "--model",
            &model,
            "--prompt",
            "x",
            "--mem-budget",
            "64KiB",
        ],
        &[],
    );
    let err = text(&o.stderr);
    assert!(!o.status.success());
    for part in [
        "device memory: the model needs",
        "weights",
        "KV cache",
        "activations",
        "programs 16.0 MiB",
        "the memory budget is 64.0 KiB (--mem-budget",
        "not even one token of context fits",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let o = tlite(
        &[
            "generate",
            "--model",
            &model,
            "--prompt",
            "x",
            "--mem-budget",
            "lots",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("invalid memory budget `lots`"));
}
