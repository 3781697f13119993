//! Declared ranges of the symbols, and the sound inequality prover the planner relies on.

use crate::error::SymShapeError;
use crate::expr::{Expr, Symbol};

/// One symbol's inclusive range, `lo ≤ sym ≤ hi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolRange {
    /// The symbol.
    pub symbol: Symbol,
    /// Smallest value.
    pub lo: i64,
    /// Largest value.
    pub hi: i64,
}

/// A linear constraint `Σ symbols ≤ bound` (e.g. `seq + past ≤ max_ctx`), checked on evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumAtMost {
    /// The symbols summed.
    pub symbols: Vec<Symbol>,
    /// The inclusive bound.
    pub bound: i64,
}

/// The symbols with their ranges and extra constraints: the set of values a plan must be valid on.
#[derive(Debug, Clone, Default)]
pub struct Domain {
    ranges: Vec<SymbolRange>,
    constraints: Vec<SumAtMost>,
}

impl Domain {
    /// An empty domain; add symbols with [`Domain::symbol`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `lo ≤ name ≤ hi` and returns the symbol as an expression.
    pub fn symbol(&mut self, name: &str, lo: i64, hi: i64) -> Result<Expr, SymShapeError> {
        if lo > hi {
            return Err(SymShapeError::EmptyRange {
                symbol: name.to_owned(),
                lo,
                hi,
            });
        }
        if self.ranges.iter().any(|r| r.symbol.name() == name) {
            return Err(SymShapeError::DuplicateSymbol(name.to_owned()));
        }
        let symbol = Symbol::new(name);
        self.ranges.push(SymbolRange {
            symbol: symbol.clone(),
            lo,
            hi,
        });
        self.ranges.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        Ok(Expr::symbol(&symbol))
    }

    /// Adds the constraint `Σ names ≤ bound`; every name must already be declared.
    pub fn constrain_sum_at_most(
        &mut self,
        names: &[&str],
        bound: i64,
    ) -> Result<(), SymShapeError> {
        let mut symbols = Vec::new();
        for n in names {
            let r = self
                .range(n)
                .ok_or_else(|| SymShapeError::UnknownSymbol(n.to_string()))?;
            symbols.push(r.symbol.clone());
        }
        let min_sum: i64 = symbols
            .iter()
            .filter_map(|s| self.range(s.name()))
            .map(|r| r.lo)
            .sum();
        if min_sum > bound {
            return Err(SymShapeError::InfeasibleConstraint {
                constraint: format!("{} <= {bound}", names.join(" + ")),
            });
        }
        self.constraints.push(SumAtMost { symbols, bound });
        Ok(())
    }

    /// The declared ranges, sorted by symbol name (this is also the evaluator's slot order).
    pub fn ranges(&self) -> &[SymbolRange] {
        &self.ranges
    }

    /// The declared sum constraints.
    pub fn constraints(&self) -> &[SumAtMost] {
        &self.constraints
    }

    /// The range of `name`, if declared.
    pub fn range(&self, name: &str) -> Option<&SymbolRange> {
        self.ranges.iter().find(|r| r.symbol.name() == name)
    }

    /// Fails when `e` mentions a symbol this domain does not declare.
    pub fn check_symbols(&self, e: &Expr) -> Result<(), SymShapeError> {
        for s in e.symbols() {
            if self.range(s.name()).is_none() {
                return Err(SymShapeError::UnknownSymbol(s.name().to_owned()));
            }
        }
        Ok(())
    }

    /// Proves `e ≥ 0` for every point of the domain.
    ///
    /// Method: substitute `sym = lo + t` with a fresh `t ≥ 0`; if every coefficient of the
    /// expanded polynomial in the `t`s is non-negative, the value is a sum of non-negative terms
    /// on the whole box. Failing that, each sum constraint `Σ s ≤ B` may be used once:
    /// `e - λ·(B - Σ s)` proven non-negative with `λ ≥ 0` implies `e ≥ 0`. Sound but incomplete:
    /// `false` means "not proven", never "false".
    pub fn proves_nonnegative(&self, e: &Expr) -> bool {
        if e.is_overflowed() || self.check_symbols(e).is_err() {
            return false;
        }
        if self.coefficients_nonnegative(e) {
            return true;
        }
        // Use each constraint `B - Σ s ≥ 0` once with a multiplier λ ≥ 0:
        // e = (e - λ(B - Σ s)) + λ(B - Σ s), so e ≥ 0 if the first part is proven non-negative.
        for c in &self.constraints {
            let slack = c
                .symbols
                .iter()
                .fold(Expr::constant(c.bound), |acc, s| acc - Expr::symbol(s));
            let mut multipliers: Vec<i128> = e
                .terms()
                .filter(|(m, coef)| *coef < 0 && m.len() == 1 && m[0].1 == 1)
                .filter(|(m, _)| c.symbols.contains(&m[0].0))
                .map(|(_, coef)| -coef)
                .collect();
            multipliers.sort_unstable();
            multipliers.dedup();
            for lambda in multipliers {
                let Ok(l) = i64::try_from(lambda) else {
                    continue;
                };
                if self.coefficients_nonnegative(&(e - &(&slack * l))) {
                    return true;
                }
            }
        }
        false
    }

    /// True when `e`, written in `t = sym - lo ≥ 0`, has only non-negative coefficients: then it
    /// is non-negative and non-decreasing in every symbol on the box.
    pub fn coefficients_nonnegative(&self, e: &Expr) -> bool {
        if e.is_overflowed() || self.check_symbols(e).is_err() {
            return false;
        }
        #[cfg(feature = "symbolica")]
        {
            crate::cas::shifted_coefficients_nonnegative(self, e).unwrap_or(false)
        }
        #[cfg(not(feature = "symbolica"))]
        {
            self.builtin_coefficients_nonnegative(e)
        }
    }

    #[cfg_attr(feature = "symbolica", allow(dead_code))]
    fn builtin_coefficients_nonnegative(&self, e: &Expr) -> bool {
        let shifted = self.shift_to_zero(e);
        !shifted.is_overflowed() && shifted.terms().all(|(_, c)| c >= 0)
    }

    /// Proves `a ≥ b` on the box.
    pub fn proves_ge(&self, a: &Expr, b: &Expr) -> bool {
        self.proves_nonnegative(&(a - b))
    }

    /// Proves `a == b` identically (same canonical polynomial).
    pub fn proves_eq(&self, a: &Expr, b: &Expr) -> bool {
        !a.is_overflowed() && a == b
    }

    /// `e` with each symbol `s` replaced by `lo_s + s` (the same name now stands for the offset).
    pub(crate) fn shift_to_zero(&self, e: &Expr) -> Expr {
        let mut out = e.clone();
        for r in &self.ranges {
            if r.lo != 0 {
                out = out.substitute(&r.symbol, &(Expr::symbol(&r.symbol) + r.lo));
            }
        }
        out
    }

    /// The value of `e` at the corner where every symbol is at its upper bound.
    pub fn at_upper_corner(&self, e: &Expr) -> Option<i128> {
        e.eval_with(|s| self.range(s.name()).map(|r| r.hi))
    }

    /// An upper bound of `|e|` on the box: Σ |c|·Π max(|lo|,|hi|)^k. Used to rule out overflow.
    pub fn abs_bound(&self, e: &Expr) -> Option<i128> {
        let mut acc: i128 = 0;
        for (m, c) in e.terms() {
            let mut t = c.checked_abs()?;
            for (s, k) in m {
                let r = self.range(s.name())?;
                let v = i128::from(r.lo.unsigned_abs().max(r.hi.unsigned_abs()));
                for _ in 0..*k {
                    t = t.checked_mul(v)?;
                }
            }
            acc = acc.checked_add(t)?;
        }
        Some(acc)
    }

    /// Checks that concrete `values` (in [`Domain::ranges`] order) lie in the domain.
    pub fn check_point(&self, values: &[i64]) -> Result<(), SymShapeError> {
        if values.len() != self.ranges.len() {
            return Err(SymShapeError::WrongBindingCount {
                expected: self.ranges.len(),
                got: values.len(),
            });
        }
        for (r, v) in self.ranges.iter().zip(values) {
            if *v < r.lo || *v > r.hi {
                return Err(SymShapeError::OutOfRange {
                    symbol: r.symbol.name().to_owned(),
                    value: *v,
                    lo: r.lo,
                    hi: r.hi,
                });
            }
        }
        for c in &self.constraints {
            let mut sum: i64 = 0;
            for s in &c.symbols {
                if let Some(i) = self.ranges.iter().position(|r| &r.symbol == s) {
                    sum = sum.saturating_add(values[i]);
                }
            }
            if sum > c.bound {
                let names: Vec<&str> = c.symbols.iter().map(|s| s.name()).collect();
                return Err(SymShapeError::ConstraintViolated {
                    constraint: format!("{} <= {}", names.join(" + "), c.bound),
                    sum,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn proofs_hold_on_random_points_and_refuse_false_claims() {
        let mut d = Domain::new();
        let seq = d.symbol("seq", 1, 64).unwrap();
        let past = d.symbol("past", 0, 63).unwrap();
        let cases = [
            (&seq * &(&seq + &past), &seq * 1, true),
            (&past + 1, Expr::constant(1), true),
            (&seq * 4, &seq + 3, true),
            (&seq * &seq, &seq * 2 - 1, true),
            // seq^2 >= 3*seq - 2 holds on integers ≥ 1 but not provable by the shift method:
            // (1+t)^2 - 3(1+t) + 2 = t^2 - t.
            (&seq * &seq, &seq * 3 - 2, false),
            (past.clone(), seq.clone(), false),
            (&seq * 2, &seq + &past, false),
        ];
        let mut rng = rand::rng();
        for (a, b, provable) in cases {
            assert_eq!(d.proves_ge(&a, &b), provable, "{a} >= {b}");
            if provable {
                for _ in 0..200 {
                    let pt = [
                        ("seq", rng.random_range(1..=64)),
                        ("past", rng.random_range(0..=63)),
                    ];
                    assert!(
                        a.eval(&pt).unwrap() >= b.eval(&pt).unwrap(),
                        "{a} >= {b} at {pt:?}"
                    );
                }
            }
        }
        assert!(!d.proves_nonnegative(&Expr::sym("unknown")));
    }

    #[test]
    fn constraint_is_used_for_linear_bounds() {
        let mut d = Domain::new();
        let seq = d.symbol("seq", 1, 64).unwrap();
        let past = d.symbol("past", 0, 63).unwrap();
        let room = Expr::constant(64) - &seq - &past;
        assert!(!d.proves_nonnegative(&room));
        d.constrain_sum_at_most(&["seq", "past"], 64).unwrap();
        assert!(d.proves_nonnegative(&room));
        assert!(!d.proves_nonnegative(&(room - 1)));
    }

    #[test]
    fn points_outside_the_domain_are_refused() {
        let mut d = Domain::new();
        d.symbol("seq", 1, 8).unwrap();
        d.symbol("past", 0, 7).unwrap();
        d.constrain_sum_at_most(&["seq", "past"], 8).unwrap();
        // ranges are sorted by name: past, seq
        assert!(d.check_point(&[7, 1]).is_ok());
        assert!(matches!(
            d.check_point(&[7, 2]),
            Err(SymShapeError::ConstraintViolated { .. })
        ));
        assert!(matches!(
            d.check_point(&[0, 0]),
            Err(SymShapeError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.check_point(&[0]),
            Err(SymShapeError::WrongBindingCount { .. })
        ));
        assert!(d.symbol("x", 3, 2).is_err());
        assert!(d.symbol("seq", 1, 2).is_err());
    }
}
