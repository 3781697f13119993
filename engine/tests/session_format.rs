//! The session file format on the host (no device): a written file decodes to what was written; any single
//! flipped byte and any truncation is an error; arbitrary bytes never panic and never decode.
#![allow(clippy::unwrap_used)]

use engine::chat_template::{ChatMessage, Role};
use engine::context_shift::ShiftedOut;
use engine::gpu::KvImageShape;
use engine::session_file::{decode, write_session, ModelIdentity, SessionContents, SessionReader};
use kvcache::KvDtype;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

struct Sample {
    shape: KvImageShape,
    tokens: Vec<u32>,
    messages: Vec<ChatMessage>,
    shifted_out: ShiftedOut,
    kv: Vec<u8>,
}

fn sample(seed: u64, positions: usize) -> Sample {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shape = KvImageShape {
        layers: rng.random_range(1..4),
        kv_heads: rng.random_range(1..3),
        head_dim: rng.random_range(1..5),
        dtype: if rng.random() {
            KvDtype::F16
        } else {
            KvDtype::F32
        },
        positions,
        local_from: 0,
    };
    let total = shape.total_bytes().unwrap() as usize;
    Sample {
        shape,
        tokens: (0..positions)
            .map(|_| rng.random_range(0..50_000))
            .collect(),
        messages: vec![
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, "quote \" and ünïcödé \n newline"),
            ChatMessage::new(Role::Assistant, "ok"),
        ],
        // Half the samples as after context shifts: a kept start and the tokens dropped after it.
        shifted_out: if positions > 0 && rng.random() {
            let keep = rng.random_range(0..=positions);
            let dropped = rng.random_range(1..40);
            ShiftedOut::from_dropped(
                keep,
                (0..dropped).map(|_| rng.random_range(0..50_000)).collect(),
            )
        } else {
            ShiftedOut::default()
        },
        kv: (0..total).map(|_| rng.random()).collect(),
    }
}

fn write(dir: &std::path::Path, s: &Sample) -> Vec<u8> {
    let path = dir.join("s.session");
    let bytes = write_session(
        &path,
        &SessionContents {
            identity: ModelIdentity::from_bytes([7; 32]),
            model_name: "tiny",
            kv: s.shape,
            tokens: &s.tokens,
            messages: &s.messages,
            forgotten: 4,
            shifted_out: &s.shifted_out,
        },
        &s.kv,
    )
    .unwrap();
    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len() as u64, bytes);
    data
}

#[test]
fn a_written_file_decodes_to_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, positions) in [(1, 9), (2, 1), (3, 0), (4, 33)] {
        let s = sample(seed, positions);
        let data = write(dir.path(), &s);
        let (header, kv) = decode(std::path::Path::new("mem"), &data).unwrap();
        assert_eq!(header.kv, s.shape);
        assert_eq!(header.tokens, s.tokens);
        assert_eq!(header.messages, s.messages);
        assert_eq!(header.forgotten, 4);
        assert_eq!(header.shifted_out, s.shifted_out);
        assert_eq!(header.model_name, "tiny");
        assert_eq!(header.identity, ModelIdentity::from_bytes([7; 32]));
        assert_eq!(kv, &s.kv[..]);
        // The file reader agrees with the in-memory decoder.
        let reader = SessionReader::open(&dir.path().join("s.session")).unwrap();
        assert_eq!(reader.header(), &header);
        assert_eq!(&*reader.read_kv().unwrap(), &s.kv[..]);
    }
}

/// Rewrites a version 2 file without `shifted_out` as format version 1 (same JSON, version field and digest
/// redone), as the builds before version 2 wrote it.
fn as_version_1(data: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut d = data.to_vec();
    d[8..12].copy_from_slice(&1u32.to_le_bytes());
    let header_len = u64::from_le_bytes(d[12..20].try_into().unwrap()) as usize;
    let end = 20 + header_len;
    let digest: [u8; 32] = Sha256::digest(&d[..end]).into();
    d[end..end + 32].copy_from_slice(&digest);
    d
}

#[test]
fn version_1_files_still_decode_and_other_versions_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sample(6, 5);
    s.shifted_out = ShiftedOut::default();
    let data = write(dir.path(), &s);
    let mem = std::path::Path::new("mem");
    let old = as_version_1(&data);
    let (header, kv) = decode(mem, &old).unwrap();
    assert_eq!(header.tokens, s.tokens);
    assert_eq!(header.shifted_out, ShiftedOut::default());
    assert_eq!(kv, &s.kv[..]);
    let mut future = as_version_1(&data);
    future[8..12].copy_from_slice(&4u32.to_le_bytes());
    let err = decode(mem, &future).unwrap_err().to_string();
    assert!(err.contains('4'), "{err}");
}

/// A cache whose ring layers lack their first positions is written as version 3 with `local_from`, which decodes
/// back; one that lacks nothing stays version 2, byte for byte what older builds read. A `local_from` past the
/// positions is refused.
#[test]
fn ring_caches_missing_positions_are_version_3_and_others_stay_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let mem = std::path::Path::new("mem");
    let plain = write(dir.path(), &sample(8, 6));
    assert_eq!(u32::from_le_bytes(plain[8..12].try_into().unwrap()), 2);
    assert!(!String::from_utf8_lossy(&plain).contains("local_from"));
    let mut s = sample(8, 6);
    s.shape.local_from = 2;
    let data = write(dir.path(), &s);
    assert_eq!(u32::from_le_bytes(data[8..12].try_into().unwrap()), 3);
    let (header, _) = decode(mem, &data).unwrap();
    assert_eq!(header.kv.local_from, 2);
    s.shape.local_from = 7;
    let bad = write(dir.path(), &s);
    let err = decode(mem, &bad).unwrap_err().to_string();
    assert!(err.contains("position 7"), "{err}");
}

#[test]
fn a_kept_start_beyond_the_cache_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sample(7, 3);
    s.shifted_out = ShiftedOut::from_dropped(4, vec![1, 2]);
    let data = write(dir.path(), &s);
    let err = decode(std::path::Path::new("mem"), &data)
        .unwrap_err()
        .to_string();
    assert!(err.contains("kept start of 4"), "{err}");
}

#[test]
fn every_single_flipped_byte_and_every_truncation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), &sample(5, 6));
    let mem = std::path::Path::new("mem");
    for at in 0..data.len() {
        for bit in [0x01u8, 0x80] {
            let mut d = data.clone();
            d[at] ^= bit;
            assert!(
                decode(mem, &d).is_err(),
                "flipping bit {bit:#x} of byte {at} of {} went unseen",
                data.len()
            );
        }
    }
    for len in 0..data.len() {
        assert!(decode(mem, &data[..len]).is_err(), "cut at {len}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes, alone or after a valid prefix (so the length and header parsers are reached): no panic,
    /// and nothing decodes.
    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600), version in 0u32..3, header_len in 0u64..700) {
        let mem = std::path::Path::new("mem");
        prop_assert!(decode(mem, &tail).is_err());
        let mut d = b"TLITESES".to_vec();
        d.extend_from_slice(&version.to_le_bytes());
        d.extend_from_slice(&header_len.to_le_bytes());
        d.extend_from_slice(&tail);
        prop_assert!(decode(mem, &d).is_err());
    }

    /// A header whose checksum is right but whose contents are arbitrary JSON-ish text: refused, never a panic
    /// or an allocation sized by the text.
    #[test]
    fn checksummed_garbage_headers_are_refused(json in "\\{[ -~]{0,200}\\}", positions in 0usize..1_000_000_000_000, layers in 0usize..1_000_000) {
        use sha2::{Digest, Sha256};
        let mem = std::path::Path::new("mem");
        let headers = [
            json,
            format!(
                "{{\"model\":\"{}\",\"model_name\":\"x\",\"kv_dtype\":\"f16\",\"layers\":{layers},\"kv_heads\":8,\
                 \"head_dim\":128,\"positions\":{positions},\"tokens\":[],\"messages\":[],\"forgotten\":0,\
                 \"blocks\":[]}}",
                "ab".repeat(32)
            ),
        ];
        for header in headers {
            let mut d = b"TLITESES".to_vec();
            d.extend_from_slice(&1u32.to_le_bytes());
            d.extend_from_slice(&(header.len() as u64).to_le_bytes());
            d.extend_from_slice(header.as_bytes());
            let digest = Sha256::digest(&d);
            d.extend_from_slice(&digest);
            prop_assert!(decode(mem, &d).is_err());
        }
    }
}
