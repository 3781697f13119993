//! The bytes one token stands for, as llama.cpp's `token_to_piece` (special tokens rendered) gives them.
//!
//! Decoding a single id through a pipeline is not the same thing: SentencePiece decoders strip the leading space of
//! a text and byte-level decoders replace bytes of an unfinished character with U+FFFD, while a listing such as
//! `tlite tokenize` must show each token's own bytes.

use super::{Inner, Tokenizer};
use crate::EngineError;
use tokenizers::DecoderWrapper;

impl Tokenizer {
    /// The bytes of token `id`: added and special tokens as written, byte tokens as their byte, SentencePiece `▁` as
    /// a space, GPT-2 byte-level characters as the bytes they encode.
    pub fn piece(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        let text = self.id_to_token(id)?;
        match &self.inner {
            Inner::Llama2c(t) => Ok(match t.byte_base {
                Some(base) if id >= base && id - base < 256 => vec![(id - base) as u8],
                // llama2.c writes its control pieces as "\n<s>\n".
                _ if t.is_control(id) => text.trim().as_bytes().to_vec(),
                _ => text.into_bytes(),
            }),
            Inner::Hf(t) => {
                if t.get_added_vocabulary().simple_id_to_token(id).is_some() {
                    return Ok(text.into_bytes());
                }
                if t.get_decoder().is_some_and(is_byte_level) {
                    return Ok(text
                        .chars()
                        .map(|c| byte_level_byte(c).unwrap_or(b'?'))
                        .collect());
                }
                if let Some(b) = sentencepiece_byte(&text) {
                    return Ok(vec![b]);
                }
                Ok(text.replace('▁', " ").into_bytes())
            }
        }
    }
}

fn is_byte_level(d: &DecoderWrapper) -> bool {
    match d {
        DecoderWrapper::ByteLevel(_) => true,
        DecoderWrapper::Sequence(s) => s.get_decoders().iter().any(is_byte_level),
        _ => false,
    }
}

/// `<0xXX>` → the byte.
fn sentencepiece_byte(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2)
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The byte GPT-2's byte-level alphabet writes as `c`: printable Latin-1 bytes stand for themselves, the other 68
/// bytes in order for U+0100 onwards.
fn byte_level_byte(c: char) -> Option<u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let code = u32::from(c);
    if let Ok(b) = u8::try_from(code) {
        return printable(b).then_some(b);
    }
    let n = code.checked_sub(256)? as usize;
    (0..=255u8).filter(|&b| !printable(b)).nth(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_is_gpt2s() {
        // GPT-2: space is Ġ (U+0120), newline Ċ (U+010A), byte 0 is U+0100, 0xAD is U+0143.
        assert_eq!(byte_level_byte('Ġ'), Some(b' '));
        assert_eq!(byte_level_byte('Ċ'), Some(b'\n'));
        assert_eq!(byte_level_byte('\u{100}'), Some(0));
        assert_eq!(byte_level_byte('\u{143}'), Some(0xAD));
        assert_eq!(byte_level_byte('a'), Some(b'a'));
        assert_eq!(byte_level_byte('é'), Some(0xE9));
        assert_eq!(byte_level_byte(' '), None);
        assert_eq!(byte_level_byte('\u{144}'), None);
        assert_eq!(sentencepiece_byte("<0x0A>"), Some(b'\n'));
        assert_eq!(sentencepiece_byte("<0x0A"), None);
    }
}
