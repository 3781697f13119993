//! Exact shape expressions: multivariate polynomials with integer coefficients.
//!
//! Every shape a decoder-only transformer produces (`seq`, `past + seq`, `heads * seq * (past + seq)`,
//! …) is a polynomial in the symbols, so a canonical sparse polynomial is enough to decide equality
//! exactly (two shapes are equal iff their canonical forms are identical) and to prove inequalities
//! on boxes (see [`crate::Domain::proves_nonnegative`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Add, Mul, Neg, Sub};
use std::sync::Arc;

/// A named symbolic dimension such as `seq` or `past`. Symbols compare by name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Symbol(Arc<str>);

impl Symbol {
    /// A symbol with this name; two symbols with the same name are the same symbol.
    pub fn new(name: &str) -> Self {
        Symbol(Arc::from(name))
    }

    /// The symbol's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product of symbol powers, sorted by symbol, exponents ≥ 1. The empty monomial is 1.
pub(crate) type Monomial = Vec<(Symbol, u32)>;

/// A polynomial in [`Symbol`]s with `i128` coefficients, kept canonical (no zero terms).
///
/// Arithmetic that would overflow `i128` saturates into an [`Expr::is_overflowed`] marker rather
/// than panicking; shape inference reports such expressions as errors.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Expr {
    terms: BTreeMap<Monomial, i128>,
    overflowed: bool,
}

fn mul_monomials(a: &Monomial, b: &Monomial) -> Monomial {
    let mut out: Monomial = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some((sa, ea)), Some((sb, eb))) if sa == sb => {
                out.push((sa.clone(), ea + eb));
                i += 1;
                j += 1;
            }
            (Some((sa, ea)), Some((sb, _))) if sa < sb => {
                out.push((sa.clone(), *ea));
                i += 1;
            }
            (Some(_), Some((sb, eb))) => {
                out.push((sb.clone(), *eb));
                j += 1;
            }
            (Some((sa, ea)), None) => {
                out.push((sa.clone(), *ea));
                i += 1;
            }
            (None, Some((sb, eb))) => {
                out.push((sb.clone(), *eb));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// `a / b` when monomial `b` divides `a`.
fn div_monomial(a: &Monomial, b: &Monomial) -> Option<Monomial> {
    let mut out = a.clone();
    for (s, e) in b {
        let pos = out.iter().position(|(t, _)| t == s)?;
        if out[pos].1 < *e {
            return None;
        }
        out[pos].1 -= e;
        if out[pos].1 == 0 {
            out.remove(pos);
        }
    }
    Some(out)
}

fn degree(m: &Monomial) -> u32 {
    m.iter().map(|(_, e)| e).sum()
}

/// Graded lexicographic order (a monomial order, so leading terms multiply).
fn grlex(a: &Monomial, b: &Monomial) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    degree(a).cmp(&degree(b)).then_with(|| {
        let (mut i, mut j) = (0, 0);
        loop {
            match (a.get(i), b.get(j)) {
                (None, None) => return Ordering::Equal,
                (Some(_), None) => return Ordering::Greater,
                (None, Some(_)) => return Ordering::Less,
                (Some((sa, ea)), Some((sb, eb))) => {
                    if sa == sb {
                        if ea != eb {
                            return ea.cmp(eb);
                        }
                        i += 1;
                        j += 1;
                    } else if sa < sb {
                        // `a` has a positive power of an earlier (larger) symbol that `b` lacks.
                        return Ordering::Greater;
                    } else {
                        return Ordering::Less;
                    }
                }
            }
        }
    })
}

impl Expr {
    /// The constant `c`.
    pub fn constant(c: i64) -> Self {
        let mut terms = BTreeMap::new();
        if c != 0 {
            terms.insert(Vec::new(), i128::from(c));
        }
        Expr {
            terms,
            overflowed: false,
        }
    }

    /// The symbol `s` as an expression.
    pub fn symbol(s: &Symbol) -> Self {
        let mut terms = BTreeMap::new();
        terms.insert(vec![(s.clone(), 1)], 1);
        Expr {
            terms,
            overflowed: false,
        }
    }

    /// The symbol named `name` as an expression.
    pub fn sym(name: &str) -> Self {
        Self::symbol(&Symbol::new(name))
    }

    /// True when some operation overflowed `i128`; such an expression is meaningless.
    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// The value when the expression has no symbols.
    pub fn as_constant(&self) -> Option<i128> {
        if self.overflowed {
            return None;
        }
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// The symbols that occur, sorted by name.
    pub fn symbols(&self) -> Vec<Symbol> {
        let mut out: Vec<Symbol> = self
            .terms
            .keys()
            .flat_map(|m| m.iter().map(|(s, _)| s.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub(crate) fn terms(&self) -> impl Iterator<Item = (&Monomial, i128)> {
        self.terms.iter().map(|(m, c)| (m, *c))
    }

    fn add_term(&mut self, m: Monomial, c: i128) {
        if c == 0 {
            return;
        }
        let entry = self.terms.entry(m.clone()).or_insert(0);
        match entry.checked_add(c) {
            Some(v) => *entry = v,
            None => self.overflowed = true,
        }
        if self.terms.get(&m) == Some(&0) {
            self.terms.remove(&m);
        }
    }

    /// Evaluates with `value(symbol)` for each symbol; `None` on overflow or an unbound symbol.
    pub fn eval_with(&self, value: impl Fn(&Symbol) -> Option<i64>) -> Option<i128> {
        if self.overflowed {
            return None;
        }
        let mut acc: i128 = 0;
        for (m, c) in &self.terms {
            let mut t = *c;
            for (s, e) in m {
                let v = i128::from(value(s)?);
                for _ in 0..*e {
                    t = t.checked_mul(v)?;
                }
            }
            acc = acc.checked_add(t)?;
        }
        Some(acc)
    }

    /// Evaluates with the given bindings.
    pub fn eval(&self, bindings: &[(&str, i64)]) -> Option<i128> {
        self.eval_with(|s| {
            bindings
                .iter()
                .find(|(n, _)| *n == s.name())
                .map(|(_, v)| *v)
        })
    }

    /// Replaces symbol `s` by the expression `by`.
    pub fn substitute(&self, s: &Symbol, by: &Expr) -> Expr {
        let mut out = Expr {
            terms: BTreeMap::new(),
            overflowed: self.overflowed || by.overflowed,
        };
        for (m, c) in &self.terms {
            let mut rest: Monomial = Vec::with_capacity(m.len());
            let mut power = 0;
            for (t, e) in m {
                if t == s {
                    power = *e;
                } else {
                    rest.push((t.clone(), *e));
                }
            }
            let mut term = Expr {
                terms: BTreeMap::from([(rest, *c)]),
                overflowed: false,
            };
            for _ in 0..power {
                term = &term * by;
            }
            out = &out + &term;
        }
        out
    }

    /// Exact division: `Some(q)` with `q * divisor == self`, or `None` when it does not divide.
    ///
    /// Multivariate division by the leading term in graded order; a zero remainder proves exactness.
    pub fn div_exact(&self, divisor: &Expr) -> Option<Expr> {
        if self.overflowed || divisor.overflowed {
            return None;
        }
        let lead = |e: &Expr| -> Option<(Monomial, i128)> {
            e.terms
                .iter()
                .max_by(|a, b| grlex(a.0, b.0))
                .map(|(m, c)| (m.clone(), *c))
        };
        let (dm, dc) = lead(divisor)?;
        let mut rem = self.clone();
        let mut quotient = Expr::default();
        // Each step removes the leading term of `rem`; bound the loop defensively.
        for _ in 0..10_000 {
            let Some((rm, rc)) = lead(&rem) else {
                return Some(quotient);
            };
            let qm = div_monomial(&rm, &dm)?;
            if rc % dc != 0 {
                return None;
            }
            let q = Expr {
                terms: BTreeMap::from([(qm, rc / dc)]),
                overflowed: false,
            };
            rem = &rem - &(&q * divisor);
            quotient = &quotient + &q;
            if rem.overflowed {
                return None;
            }
        }
        None
    }
}

impl From<i64> for Expr {
    fn from(c: i64) -> Self {
        Expr::constant(c)
    }
}

impl From<&Symbol> for Expr {
    fn from(s: &Symbol) -> Self {
        Expr::symbol(s)
    }
}

impl Add for &Expr {
    type Output = Expr;
    fn add(self, rhs: &Expr) -> Expr {
        let mut out = self.clone();
        out.overflowed = out.overflowed || rhs.overflowed;
        for (m, c) in &rhs.terms {
            out.add_term(m.clone(), *c);
        }
        out
    }
}

impl Sub for &Expr {
    type Output = Expr;
    fn sub(self, rhs: &Expr) -> Expr {
        self + &(-rhs)
    }
}

impl Neg for &Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        let mut out = Expr {
            terms: BTreeMap::new(),
            overflowed: self.overflowed,
        };
        for (m, c) in &self.terms {
            match c.checked_neg() {
                Some(v) => {
                    out.terms.insert(m.clone(), v);
                }
                None => out.overflowed = true,
            }
        }
        out
    }
}

impl Mul for &Expr {
    type Output = Expr;
    fn mul(self, rhs: &Expr) -> Expr {
        let mut out = Expr {
            terms: BTreeMap::new(),
            overflowed: self.overflowed || rhs.overflowed,
        };
        for (ma, ca) in &self.terms {
            for (mb, cb) in &rhs.terms {
                match ca.checked_mul(*cb) {
                    Some(c) => out.add_term(mul_monomials(ma, mb), c),
                    None => out.overflowed = true,
                }
            }
        }
        out
    }
}

macro_rules! owned_ops {
    ($($tr:ident $f:ident),*) => {$(
        impl $tr for Expr {
            type Output = Expr;
            fn $f(self, rhs: Expr) -> Expr { (&self).$f(&rhs) }
        }
        impl $tr<&Expr> for Expr {
            type Output = Expr;
            fn $f(self, rhs: &Expr) -> Expr { (&self).$f(rhs) }
        }
        impl $tr<i64> for Expr {
            type Output = Expr;
            fn $f(self, rhs: i64) -> Expr { (&self).$f(&Expr::constant(rhs)) }
        }
        impl $tr<i64> for &Expr {
            type Output = Expr;
            fn $f(self, rhs: i64) -> Expr { self.$f(&Expr::constant(rhs)) }
        }
    )*};
}
owned_ops!(Add add, Sub sub, Mul mul);

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.overflowed {
            return f.write_str("<overflow>");
        }
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Highest degree first reads naturally: 2*seq^2 + seq + 3.
        let mut terms: Vec<(&Monomial, &i128)> = self.terms.iter().collect();
        terms.sort_by(|a, b| degree(b.0).cmp(&degree(a.0)).then(a.0.cmp(b.0)));
        for (i, (m, c)) in terms.into_iter().enumerate() {
            let c = *c;
            let (sign, mag) = if c < 0 {
                ("-", c.unsigned_abs())
            } else {
                ("+", c.unsigned_abs())
            };
            if i == 0 {
                if sign == "-" {
                    f.write_str("-")?;
                }
            } else {
                write!(f, " {sign} ")?;
            }
            let mut parts: Vec<String> = Vec::new();
            if mag != 1 || m.is_empty() {
                parts.push(mag.to_string());
            }
            for (s, e) in m {
                parts.push(if *e == 1 {
                    s.to_string()
                } else {
                    format!("{s}^{e}")
                });
            }
            f.write_str(&parts.join("*"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({self})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random_expr(rng: &mut impl Rng) -> Expr {
        let syms = ["seq", "past", "b"];
        let mut e = Expr::constant(rng.random_range(-5..=5));
        for _ in 0..rng.random_range(1..4) {
            let mut t = Expr::constant(rng.random_range(-4..=4));
            for _ in 0..rng.random_range(0..3) {
                t = t * Expr::sym(syms[rng.random_range(0..3)]);
            }
            e = e + t;
        }
        e
    }

    #[test]
    fn arithmetic_matches_integer_evaluation() {
        let mut rng = rand::rng();
        for _ in 0..300 {
            let (a, b) = (random_expr(&mut rng), random_expr(&mut rng));
            let vals = [
                ("seq", rng.random_range(-50..50)),
                ("past", rng.random_range(-50..50)),
                ("b", rng.random_range(-50..50)),
            ];
            let (va, vb) = (a.eval(&vals).unwrap(), b.eval(&vals).unwrap());
            assert_eq!((&a + &b).eval(&vals).unwrap(), va + vb);
            assert_eq!((&a - &b).eval(&vals).unwrap(), va - vb);
            assert_eq!((&a * &b).eval(&vals).unwrap(), va * vb);
            let prod = &a * &b;
            if b.as_constant() != Some(0) {
                let q = prod.div_exact(&b).unwrap();
                assert_eq!(q, a, "({prod}) / ({b})");
            }
            let sub = a.substitute(&Symbol::new("seq"), &b);
            let v2 = [vals[0], vals[1], vals[2]];
            let vs = a.eval(&[("seq", vb as i64), v2[1], v2[2]]).unwrap();
            assert_eq!(sub.eval(&v2).unwrap(), vs);
        }
    }

    #[test]
    fn display_and_inexact_division() {
        let s = Expr::sym("seq");
        let p = Expr::sym("past");
        let e = (&s + &p) * &s * 2 + 3;
        assert_eq!(e.to_string(), "2*past*seq + 2*seq^2 + 3");
        assert!((&s + 1).div_exact(&Expr::constant(2)).is_none());
        assert!(s.div_exact(&p).is_none());
        assert_eq!((&s * 6).div_exact(&Expr::constant(3)).unwrap(), &s * 2);
    }
}
