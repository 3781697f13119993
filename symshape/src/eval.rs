//! The per-step evaluator: polynomials compiled to flat arrays over a fixed symbol slot table.
//!
//! No expression tree, hashing or allocation happens at evaluation time; one pass over a
//! coefficient array and a slot-index array computes every distinct expression of a plan.

use crate::domain::Domain;
use crate::error::SymShapeError;
use crate::expr::Expr;

/// Distinct expressions compiled for repeated evaluation with `i64` arithmetic.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    /// Per term: coefficient and the end of its factor run in `factors`.
    coefs: Vec<i64>,
    factor_end: Vec<u32>,
    /// Slot indices; a power `s^k` appears `k` times.
    factors: Vec<u16>,
    /// Per expression: the end of its term run.
    term_end: Vec<u32>,
}

impl Program {
    /// Compiles `exprs` over the slots of `domain` (its [`Domain::ranges`] order). Each
    /// expression's absolute value is bounded on the domain first, so that the unchecked `i64`
    /// arithmetic at run time cannot overflow for any in-range input.
    pub(crate) fn compile(
        domain: &Domain,
        exprs: &[(String, Expr)],
    ) -> Result<Self, SymShapeError> {
        let mut p = Program::default();
        for (what, e) in exprs {
            let too_large = || SymShapeError::TooLarge {
                what: what.clone(),
                expr: e.to_string(),
            };
            let bound = domain.abs_bound(e).ok_or_else(too_large)?;
            if bound > i128::from(i64::MAX) {
                return Err(too_large());
            }
            for (m, c) in e.terms() {
                p.coefs.push(i64::try_from(c).map_err(|_| too_large())?);
                for (s, k) in m {
                    let slot = domain
                        .ranges()
                        .iter()
                        .position(|r| &r.symbol == s)
                        .ok_or_else(|| SymShapeError::UnknownSymbol(s.name().to_owned()))?;
                    let slot = u16::try_from(slot).map_err(|_| too_large())?;
                    for _ in 0..*k {
                        p.factors.push(slot);
                    }
                }
                p.factor_end.push(p.factors.len() as u32);
            }
            p.term_end.push(p.coefs.len() as u32);
        }
        Ok(p)
    }

    /// Number of compiled expressions.
    pub(crate) fn len(&self) -> usize {
        self.term_end.len()
    }

    /// Evaluates every expression; `slots` must already be checked against the domain.
    #[inline]
    pub(crate) fn run(&self, slots: &[i64], out: &mut [i64]) {
        let mut term = 0usize;
        let mut factor = 0usize;
        for (o, &tend) in out.iter_mut().zip(&self.term_end) {
            let mut acc: i64 = 0;
            while term < tend as usize {
                let mut t = self.coefs[term];
                let fend = self.factor_end[term] as usize;
                while factor < fend {
                    t = t.wrapping_mul(slots[self.factors[factor] as usize]);
                    factor += 1;
                }
                acc = acc.wrapping_add(t);
                term += 1;
            }
            *o = acc;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn compiled_matches_exact_evaluation() {
        let mut d = Domain::new();
        let seq = d.symbol("seq", 1, 4096).unwrap();
        let past = d.symbol("past", 0, 4095).unwrap();
        let exprs = vec![
            ("a".to_owned(), &seq * &(&seq + &past) * 32 * 4),
            ("b".to_owned(), Expr::constant(7)),
            ("c".to_owned(), &seq * &seq * &past - &seq * 3 + 11),
            ("d".to_owned(), Expr::constant(0)),
        ];
        let p = Program::compile(&d, &exprs).unwrap();
        let mut out = vec![0; p.len()];
        let mut rng = rand::rng();
        for _ in 0..500 {
            let (pv, sv) = (rng.random_range(0..4096), rng.random_range(1..=4096));
            p.run(&[pv, sv], &mut out); // slots sorted by name: past, seq
            for ((_, e), got) in exprs.iter().zip(&out) {
                assert_eq!(
                    i128::from(*got),
                    e.eval(&[("seq", sv), ("past", pv)]).unwrap()
                );
            }
        }
        let huge = vec![("h".to_owned(), &seq * &seq * &seq * &seq * &seq * &seq)];
        assert!(matches!(
            Program::compile(&d, &huge),
            Err(SymShapeError::TooLarge { .. })
        ));
    }
}
