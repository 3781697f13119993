//! `tlite tokenize`: the ids a model's tokenizer gives a text, printed as llama.cpp's `llama-tokenize` prints them,
//! so the two can be compared line by line.

use engine::tokenizer::{EncodeOptions, Tokenizer};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A GGUF file, a Hugging Face model folder, or a llama2.c checkpoint (with tokenizer.bin beside it).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Print only the ids, as a list `[1, 2, 3]`.
    #[arg(long)]
    ids: bool,
    /// Do not add the BOS/EOS tokens the model's tokenizer adds to a text.
    #[arg(long)]
    no_bos: bool,
    /// Read special-token text such as `<|im_start|>` as plain characters, not as the special token.
    #[arg(long)]
    no_parse_special: bool,
    /// Print the number of tokens after the list.
    #[arg(long)]
    show_count: bool,
    /// The text to tokenise.
    text: String,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let tokenizer = Tokenizer::for_model(&args.model)?;
    let ids = tokenizer.encode_with(
        &args.text,
        EncodeOptions {
            add_special: !args.no_bos,
            parse_special: !args.no_parse_special,
        },
    )?;
    let mut out = std::io::stdout().lock();
    render(&tokenizer, &ids, &args, &mut out)
}

/// Writes the listing: `[1, 2]` with `--ids`, else one `%6d -> 'piece'` line per token as llama-tokenize does.
fn render(
    tokenizer: &Tokenizer,
    ids: &[u32],
    args: &Args,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if args.ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else {
        for &id in ids {
            // Raw bytes, as llama-tokenize writes them: a token may hold part of a UTF-8 character.
            write!(out, "{id:6} -> '")?;
            out.write_all(&tokenizer.piece(id)?)?;
            writeln!(out, "'")?;
        }
    }
    if args.show_count {
        writeln!(out, "Total number of tokens: {}", ids.len())?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use fixtures::gguf_writer::{gguf_bytes, GgufValue};

    /// Byte-level vocabulary: "a", "b", "ab" (merged), "Ġa" (" a"), and `<|end|>` as a control token.
    fn tiny_gguf(dir: &std::path::Path) -> PathBuf {
        let strs = |v: &[&str]| GgufValue::Strs(v.iter().map(|s| s.to_string()).collect());
        let meta = [
            ("tokenizer.ggml.model", GgufValue::Str("gpt2".into())),
            ("tokenizer.ggml.pre", GgufValue::Str("gpt-2".into())),
            (
                "tokenizer.ggml.tokens",
                strs(&["a", "b", "ab", "Ġ", "Ġa", "<|end|>"]),
            ),
            (
                "tokenizer.ggml.token_type",
                GgufValue::I32s(vec![1, 1, 1, 1, 1, 3]),
            ),
            ("tokenizer.ggml.merges", strs(&["a b", "Ġ a"])),
            ("tokenizer.ggml.bos_token_id", GgufValue::U32(5)),
            ("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
        ];
        let path = dir.join("tiny.gguf");
        std::fs::write(&path, gguf_bytes(&meta, &[])).unwrap();
        path
    }

    fn run_args(model: PathBuf, flags: &[&str], text: &str) -> String {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let mut argv = vec![
            "tlite".to_string(),
            "--model".into(),
            model.display().to_string(),
        ];
        argv.extend(flags.iter().map(|s| s.to_string()));
        argv.push(text.into());
        let args = Cli::parse_from(argv).args;
        let t = Tokenizer::for_model(&args.model).unwrap();
        let opts = EncodeOptions {
            add_special: !args.no_bos,
            parse_special: !args.no_parse_special,
        };
        let ids = t.encode_with(&args.text, opts).unwrap();
        let mut out = Vec::new();
        render(&t, &ids, &args, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prints_like_llama_tokenize() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_gguf(dir.path());
        assert_eq!(run_args(model.clone(), &["--ids"], "ab a"), "[5, 2, 4]\n");
        assert_eq!(
            run_args(model.clone(), &["--no-bos"], "ab a"),
            "     2 -> 'ab'\n     4 -> ' a'\n"
        );
        assert_eq!(
            run_args(model.clone(), &["--ids", "--no-bos"], "<|end|>"),
            "[5]\n"
        );
        let literal = run_args(
            model,
            &["--ids", "--no-bos", "--no-parse-special"],
            "<|end|>",
        );
        assert_ne!(literal, "[5]\n");
    }
}
