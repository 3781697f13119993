//! Plan-time proofs through Symbolica (feature `symbolica`, off by default).
//!
//! Unlicensed Symbolica aborts the process when a second thread uses it (see the crate docs), so
//! every call goes to one long-lived worker thread owned by this module. Nothing here runs on
//! the per-step path. Any failure (worker gone, unparsable text) answers "not proven", which only
//! makes the planner keep tensors apart.

use std::fmt::Write;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::domain::Domain;
use crate::expr::Expr;

struct Job {
    text: String,
    reply: mpsc::Sender<Option<bool>>,
}

static WORKER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();

fn worker() -> &'static Mutex<mpsc::Sender<Job>> {
    WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // If the thread cannot start, `rx` is dropped and every request fails: "not proven".
        let _ = std::thread::Builder::new()
            .name("symshape-symbolica".into())
            .spawn(move || {
                for job in rx {
                    let _ = job.reply.send(expanded_coefficients_nonnegative(&job.text));
                }
            });
        Mutex::new(tx)
    })
}

fn expanded_coefficients_nonnegative(text: &str) -> Option<bool> {
    use symbolica::poly::polynomial::MultivariatePolynomial;
    use symbolica::prelude::*;
    let atom = try_parse!(text).ok()?;
    let poly: MultivariatePolynomial<IntegerRing, u16> =
        atom.expand().try_to_polynomial(&Z, None).ok()?;
    Some(poly.coefficients.iter().all(|c| !c.is_negative()))
}

/// `e` with each symbol `s` written as `(s + lo_s)`, in Symbolica's input syntax.
fn shifted_text(domain: &Domain, e: &Expr) -> String {
    let mut out = String::from("0");
    for (m, c) in e.terms() {
        let _ = write!(out, " + ({c})");
        for (s, k) in m {
            let lo = domain.range(s.name()).map_or(0, |r| r.lo);
            let _ = write!(out, "*({} + ({lo}))^{k}", s.name());
        }
    }
    out
}

/// Symbolica's answer to "are all coefficients of `e`, shifted to the lower bounds, ≥ 0?";
/// `None` when it could not be asked.
pub(crate) fn shifted_coefficients_nonnegative(domain: &Domain, e: &Expr) -> Option<bool> {
    let (tx, rx) = mpsc::channel();
    let job = Job {
        text: shifted_text(domain, e),
        reply: tx,
    };
    worker().lock().ok()?.send(job).ok()?;
    rx.recv().ok()?
}
