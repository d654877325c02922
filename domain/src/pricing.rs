//! The pricing engine (`calculateQuotePricing`, `applyDiscounts`,
//! `calculateTaxes`): exact decimals, never floats.
//!
//! # Rounding rule
//! Every money amount is rounded **per line**, half away from zero, to the
//! currency's minor unit (cents for NZD, none for JPY, mills for KWD), at
//! four points: the line amount (quantity × unit price), the line discount,
//! the line's share of a quote discount and the line's tax. Totals are sums
//! of rounded line amounts, so a printed quote always adds up. A quote's
//! total therefore differs from the unrounded arithmetic by at most
//! `2 × minor unit × number of lines` (four half-unit roundings per line).
//!
//! # Order of operations
//! 1. line amount = quantity × unit price;
//! 2. line discount (percent of the line amount, or a fixed amount not above it);
//! 3. quote discount: a percent applies to every included line; a fixed amount
//!    is spread over the included lines in proportion to their discounted
//!    amounts (largest remainder, so the shares add up to it exactly);
//! 4. tax per line at the line's rate: on top of the amount (tax-exclusive
//!    prices) or contained in it (tax-inclusive prices: tax = amount × rate ÷
//!    (100 + rate)).
//!
//! Optional lines that the customer has not selected are priced for display
//! but left out of every total.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{Currency, FieldError};

/// Largest quantity of one line.
pub const MAX_QUANTITY: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Largest unit price.
pub const MAX_UNIT_PRICE: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Most decimal places of a quantity, unit price, percent or rate.
pub const MAX_SCALE: u32 = 4;

impl Currency {
    /// ISO 4217 minor-unit exponent: 2 for most currencies.
    pub fn minor_units(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// `amount` rounded to the minor unit, half away from zero, and written
    /// with exactly that many decimals ("400.00", not "400").
    pub fn round(&self, amount: Decimal) -> Decimal {
        let mut rounded = amount
            .round_dp_with_strategy(self.minor_units(), RoundingStrategy::MidpointAwayFromZero);
        rounded.rescale(self.minor_units());
        rounded
    }

    /// One minor unit (0.01 for NZD).
    pub fn minor_unit(&self) -> Decimal {
        Decimal::new(1, self.minor_units())
    }
}

/// A discount on a line or on the whole quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Discount {
    /// 0 to 100.
    Percent(Decimal),
    /// In the quote's currency; not above what it discounts.
    Amount(Decimal),
}

/// Whether entered prices exclude or include tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaxMode {
    #[default]
    Exclusive,
    Inclusive,
}

/// What the engine needs of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceLine {
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub discount: Option<Discount>,
    /// Percent, e.g. 15 for GST 15%; 0 for zero-rated.
    pub tax_rate: Decimal,
    /// Optional lines count only when `selected`.
    pub optional: bool,
    pub selected: bool,
}

impl PriceLine {
    pub fn included(&self) -> bool {
        !self.optional || self.selected
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingInput {
    pub currency: Currency,
    pub tax_mode: TaxMode,
    pub lines: Vec<PriceLine>,
    pub discount: Option<Discount>,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinePricing {
    /// quantity × unit price, rounded.
    pub amount: Decimal,
    pub line_discount: Decimal,
    /// This line's share of the quote discount.
    pub quote_discount: Decimal,
    /// Amount before tax, after both discounts.
    pub net: Decimal,
    pub tax_rate: Decimal,
    pub tax: Decimal,
    /// Net plus tax.
    pub total: Decimal,
    /// False for an optional line not selected (left out of the totals).
    pub included: bool,
}

/// Tax at one rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaxBreakdown {
    pub rate: Decimal,
    /// Net amount taxed at this rate.
    pub taxable: Decimal,
    pub tax: Decimal,
}

/// `calculateQuotePricing`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotePricing {
    pub currency: Currency,
    pub tax_mode: TaxMode,
    pub lines: Vec<LinePricing>,
    /// Sum of included line amounts, before discounts.
    pub subtotal: Decimal,
    pub line_discounts: Decimal,
    pub quote_discount: Decimal,
    /// Sum of included nets: the amount before tax.
    pub net_total: Decimal,
    pub tax_total: Decimal,
    /// What the customer pays.
    pub total: Decimal,
    /// By rate, ascending.
    pub taxes: Vec<TaxBreakdown>,
}

fn check_scale(errors: &mut Vec<FieldError>, pointer: String, value: Decimal) {
    if value.normalize().scale() > MAX_SCALE {
        errors.push(FieldError::new(
            pointer,
            "too_precise",
            format!("at most {MAX_SCALE} decimal places"),
        ));
    }
}

fn check_discount(errors: &mut Vec<FieldError>, pointer: &str, discount: &Discount) {
    match *discount {
        Discount::Percent(p) => {
            if p < Decimal::ZERO || p > Decimal::ONE_HUNDRED {
                errors.push(FieldError::new(
                    format!("{pointer}/value"),
                    "out_of_range",
                    "a percent discount is 0 to 100",
                ));
            }
            check_scale(errors, format!("{pointer}/value"), p);
        }
        Discount::Amount(a) => {
            if a < Decimal::ZERO {
                errors.push(FieldError::new(
                    format!("{pointer}/value"),
                    "out_of_range",
                    "a discount amount is not negative",
                ));
            }
            check_scale(errors, format!("{pointer}/value"), a);
        }
    }
}

/// The most lines a quote has.
pub const MAX_LINES: usize = 500;

/// Checks every input field; errors name JSON pointers under `/lines/{i}`.
pub fn validate(input: &PricingInput) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if input.lines.len() > MAX_LINES {
        errors.push(FieldError::new(
            "/lines",
            "too_many",
            format!("a quote has at most {MAX_LINES} lines"),
        ));
    }
    for (i, line) in input.lines.iter().enumerate() {
        let at = |field: &str| format!("/lines/{i}/{field}");
        if line.quantity < Decimal::ZERO {
            errors.push(FieldError::new(
                at("quantity"),
                "negative",
                "a quantity is not negative",
            ));
        } else if line.quantity > MAX_QUANTITY {
            errors.push(FieldError::new(
                at("quantity"),
                "out_of_range",
                "a quantity is at most 1,000,000,000",
            ));
        }
        check_scale(&mut errors, at("quantity"), line.quantity);
        if line.unit_price < Decimal::ZERO {
            errors.push(FieldError::new(
                at("unitPrice"),
                "negative",
                "a unit price is not negative",
            ));
        } else if line.unit_price > MAX_UNIT_PRICE {
            errors.push(FieldError::new(
                at("unitPrice"),
                "out_of_range",
                "a unit price is at most 1,000,000,000",
            ));
        }
        check_scale(&mut errors, at("unitPrice"), line.unit_price);
        if line.tax_rate < Decimal::ZERO || line.tax_rate > Decimal::ONE_HUNDRED {
            errors.push(FieldError::new(
                at("taxRate"),
                "out_of_range",
                "a tax rate is 0 to 100 percent",
            ));
        }
        check_scale(&mut errors, at("taxRate"), line.tax_rate);
        if let Some(discount) = &line.discount {
            check_discount(&mut errors, &at("discount"), discount);
        }
    }
    if let Some(discount) = &input.discount {
        check_discount(&mut errors, "/discount", discount);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Splits `total` over `weights` in minor units, in proportion, so that the
/// shares add up to `total` exactly (largest remainder; ties to the earlier
/// line).
fn allocate(total: Decimal, weights: &[Decimal], unit: Decimal) -> Vec<Decimal> {
    let sum: Decimal = weights.iter().copied().sum();
    if sum.is_zero() || total.is_zero() {
        return vec![Decimal::ZERO; weights.len()];
    }
    let units_total = (total / unit).trunc();
    let mut shares: Vec<Decimal> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(Decimal, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let exact = units_total * *w / sum;
        let floor = exact.floor();
        shares.push(floor);
        remainders.push((exact - floor, i));
    }
    let mut left = units_total - shares.iter().copied().sum::<Decimal>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left <= Decimal::ZERO {
            break;
        }
        shares[i] += Decimal::ONE;
        left -= Decimal::ONE;
    }
    shares.into_iter().map(|s| s * unit).collect()
}

/// `calculateQuotePricing`: validates, then prices every line and totals.
pub fn calculate(input: &PricingInput) -> Result<QuotePricing, Vec<FieldError>> {
    validate(input)?;
    let c = input.currency;
    let hundred = Decimal::ONE_HUNDRED;
    let mut errors = Vec::new();

    // 1-2: line amounts and line discounts (applyDiscounts, per line).
    let mut after_line = Vec::with_capacity(input.lines.len());
    let mut amounts = Vec::with_capacity(input.lines.len());
    let mut line_discounts = Vec::with_capacity(input.lines.len());
    for (i, line) in input.lines.iter().enumerate() {
        let amount = c.round(line.quantity * line.unit_price);
        let discount = match line.discount {
            None => Decimal::ZERO,
            Some(Discount::Percent(p)) => c.round(amount * p / hundred),
            Some(Discount::Amount(a)) => {
                if a > amount {
                    errors.push(FieldError::new(
                        format!("/lines/{i}/discount/value"),
                        "discount_exceeds_amount",
                        format!("the discount {a} is more than the line amount {amount}"),
                    ));
                }
                c.round(a).min(amount)
            }
        };
        amounts.push(amount);
        line_discounts.push(discount);
        after_line.push(amount - discount);
    }

    // 3: the quote discount over included lines.
    let included: Vec<bool> = input.lines.iter().map(PriceLine::included).collect();
    let weights: Vec<Decimal> = after_line
        .iter()
        .zip(&included)
        .map(|(a, inc)| if *inc { *a } else { Decimal::ZERO })
        .collect();
    let quote_discounts: Vec<Decimal> = match input.discount {
        None => vec![Decimal::ZERO; input.lines.len()],
        Some(Discount::Percent(p)) => weights.iter().map(|w| c.round(*w * p / hundred)).collect(),
        Some(Discount::Amount(a)) => {
            let base: Decimal = weights.iter().copied().sum();
            if a > base {
                errors.push(FieldError::new(
                    "/discount/value",
                    "discount_exceeds_amount",
                    format!("the discount {a} is more than the discounted subtotal {base}"),
                ));
            }
            allocate(c.round(a).min(base), &weights, c.minor_unit())
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    // 4: taxes per line (calculateTaxes).
    let mut lines = Vec::with_capacity(input.lines.len());
    for (i, line) in input.lines.iter().enumerate() {
        let discounted = after_line[i] - quote_discounts[i];
        let (net, tax, total) = match input.tax_mode {
            TaxMode::Exclusive => {
                let tax = c.round(discounted * line.tax_rate / hundred);
                (discounted, tax, discounted + tax)
            }
            TaxMode::Inclusive => {
                let tax = c.round(discounted * line.tax_rate / (hundred + line.tax_rate));
                (discounted - tax, tax, discounted)
            }
        };
        lines.push(LinePricing {
            amount: amounts[i],
            line_discount: line_discounts[i],
            quote_discount: quote_discounts[i],
            net,
            tax_rate: line.tax_rate.normalize(),
            tax,
            total,
            included: included[i],
        });
    }
    let sum = |f: fn(&LinePricing) -> Decimal| -> Decimal {
        c.round(lines.iter().filter(|l| l.included).map(f).sum())
    };
    let mut by_rate: BTreeMap<Decimal, (Decimal, Decimal)> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.included) {
        let entry = by_rate.entry(line.tax_rate).or_default();
        entry.0 += line.net;
        entry.1 += line.tax;
    }
    Ok(QuotePricing {
        currency: c,
        tax_mode: input.tax_mode,
        subtotal: sum(|l| l.amount),
        line_discounts: sum(|l| l.line_discount),
        quote_discount: sum(|l| l.quote_discount),
        net_total: sum(|l| l.net),
        tax_total: sum(|l| l.tax),
        total: sum(|l| l.total),
        taxes: by_rate
            .into_iter()
            .map(|(rate, (taxable, tax))| TaxBreakdown {
                rate,
                taxable: c.round(taxable),
                tax: c.round(tax),
            })
            .collect(),
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn nzd() -> Currency {
        Currency::parse("", "NZD").unwrap()
    }

    fn line(q: &str, p: &str, rate: &str) -> PriceLine {
        PriceLine {
            quantity: d(q),
            unit_price: d(p),
            discount: None,
            tax_rate: d(rate),
            optional: false,
            selected: false,
        }
    }

    #[test]
    fn gst_and_zero_rated_lines_with_discounts() {
        let mut consulting = line("12.5", "180", "15");
        consulting.discount = Some(Discount::Percent(d("10")));
        let mut travel = line("1", "245.55", "0");
        travel.discount = Some(Discount::Amount(d("45.55")));
        let mut optional = line("3", "100", "15");
        optional.optional = true;
        let pricing = calculate(&PricingInput {
            currency: nzd(),
            tax_mode: TaxMode::Exclusive,
            lines: vec![consulting, travel, optional],
            discount: Some(Discount::Percent(d("5"))),
        })
        .unwrap();
        // 12.5 × 180 = 2250.00; −10% = 2025.00; −5% = 1923.75; GST 288.5625 → 288.56
        let l0 = &pricing.lines[0];
        assert_eq!(
            (
                l0.amount,
                l0.line_discount,
                l0.quote_discount,
                l0.net,
                l0.tax,
                l0.total
            ),
            (
                d("2250.00"),
                d("225.00"),
                d("101.25"),
                d("1923.75"),
                d("288.56"),
                d("2212.31")
            )
        );
        // 245.55 − 45.55 = 200.00; −5% = 190.00; zero-rated
        let l1 = &pricing.lines[1];
        assert_eq!(
            (l1.net, l1.tax, l1.total),
            (d("190.00"), d("0"), d("190.00"))
        );
        assert!(!pricing.lines[2].included);
        assert_eq!(pricing.subtotal, d("2495.55"));
        assert_eq!(pricing.line_discounts, d("270.55"));
        assert_eq!(pricing.quote_discount, d("111.25"));
        assert_eq!(pricing.net_total, d("2113.75"));
        assert_eq!(pricing.tax_total, d("288.56"));
        assert_eq!(pricing.total, d("2402.31"));
        assert_eq!(
            pricing.taxes,
            vec![
                TaxBreakdown {
                    rate: d("0"),
                    taxable: d("190.00"),
                    tax: d("0")
                },
                TaxBreakdown {
                    rate: d("15"),
                    taxable: d("1923.75"),
                    tax: d("288.56")
                },
            ]
        );
    }

    #[test]
    fn inclusive_prices_contain_their_tax() {
        let pricing = calculate(&PricingInput {
            currency: nzd(),
            tax_mode: TaxMode::Inclusive,
            lines: vec![line("1", "115", "15")],
            discount: None,
        })
        .unwrap();
        assert_eq!(
            (pricing.net_total, pricing.tax_total, pricing.total),
            (d("100.00"), d("15.00"), d("115"))
        );
    }

    #[test]
    fn rounding_is_half_away_from_zero_to_the_minor_unit() {
        assert_eq!(nzd().round(d("0.125")), d("0.13"));
        assert_eq!(nzd().round(d("0.135")), d("0.14"));
        assert_eq!(nzd().round(d("-0.125")), d("-0.13"));
        let jpy = Currency::parse("", "JPY").unwrap();
        assert_eq!(jpy.round(d("100.5")), d("101"));
        let kwd = Currency::parse("", "KWD").unwrap();
        assert_eq!(kwd.round(d("1.2345")), d("1.235"));
    }

    #[test]
    fn fixed_quote_discount_is_spread_exactly() {
        let pricing = calculate(&PricingInput {
            currency: nzd(),
            tax_mode: TaxMode::Exclusive,
            lines: vec![
                line("1", "10", "15"),
                line("1", "10", "15"),
                line("1", "10", "0"),
            ],
            discount: Some(Discount::Amount(d("10.00"))),
        })
        .unwrap();
        let shares: Vec<Decimal> = pricing.lines.iter().map(|l| l.quote_discount).collect();
        assert_eq!(shares, vec![d("3.34"), d("3.33"), d("3.33")]);
        assert_eq!(pricing.quote_discount, d("10.00"));
    }

    #[test]
    fn invalid_input_names_every_field() {
        let mut bad = line("-1", "-5", "101");
        bad.discount = Some(Discount::Percent(d("150")));
        let mut too_much = line("1", "10", "15");
        too_much.discount = Some(Discount::Amount(d("11")));
        let errors = calculate(&PricingInput {
            currency: nzd(),
            tax_mode: TaxMode::Exclusive,
            lines: vec![bad, line("1.00001", "1", "0")],
            discount: Some(Discount::Percent(d("-1"))),
        })
        .unwrap_err();
        let pointers: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.pointer.as_str(), e.code))
            .collect();
        assert_eq!(
            pointers,
            vec![
                ("/lines/0/quantity", "negative"),
                ("/lines/0/unitPrice", "negative"),
                ("/lines/0/taxRate", "out_of_range"),
                ("/lines/0/discount/value", "out_of_range"),
                ("/lines/1/quantity", "too_precise"),
                ("/discount/value", "out_of_range"),
            ]
        );
        let errors = calculate(&PricingInput {
            currency: nzd(),
            tax_mode: TaxMode::Exclusive,
            lines: vec![too_much],
            discount: None,
        })
        .unwrap_err();
        assert_eq!(errors[0].code, "discount_exceeds_amount");
    }

    fn decimal(max_units: i64, scale: u32) -> impl Strategy<Value = Decimal> {
        (0..=max_units).prop_map(move |n| Decimal::new(n, scale))
    }

    fn percent() -> impl Strategy<Value = Option<Discount>> {
        prop_oneof![
            Just(None),
            decimal(10_000, 2).prop_map(|p| Some(Discount::Percent(p))),
        ]
    }

    fn line_discount() -> impl Strategy<Value = Option<Discount>> {
        prop_oneof![
            percent(),
            decimal(5_000_000, 2).prop_map(|a| Some(Discount::Amount(a))),
        ]
    }

    fn price_line(
        rates: &'static [i64],
        discounts: BoxedStrategy<Option<Discount>>,
    ) -> impl Strategy<Value = PriceLine> {
        (
            decimal(100_000, 2),
            decimal(10_000_000, 2),
            discounts,
            prop::sample::select(rates).prop_map(|r| Decimal::new(r, 1)),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(quantity, unit_price, discount, tax_rate, optional, selected)| PriceLine {
                    quantity,
                    unit_price,
                    discount,
                    tax_rate,
                    optional,
                    selected,
                },
            )
    }

    /// 0%, 12.5% and 15%, in tenths of a percent.
    const RATES: &[i64] = &[0, 125, 150];

    fn input() -> impl Strategy<Value = PricingInput> {
        (
            prop::collection::vec(price_line(RATES, line_discount().boxed()), 1..12),
            prop_oneof![Just(TaxMode::Exclusive), Just(TaxMode::Inclusive)],
            percent(),
            prop_oneof![Just("NZD"), Just("JPY"), Just("KWD")],
        )
            .prop_map(|(lines, tax_mode, discount, currency)| PricingInput {
                currency: Currency::parse("", currency).unwrap(),
                tax_mode,
                lines,
                discount,
            })
    }

    /// The total without any rounding.
    fn exact_total(input: &PricingInput) -> Decimal {
        let hundred = Decimal::ONE_HUNDRED;
        input
            .lines
            .iter()
            .filter(|l| l.included())
            .map(|l| {
                let mut amount = l.quantity * l.unit_price;
                match l.discount {
                    Some(Discount::Percent(p)) => amount -= amount * p / hundred,
                    Some(Discount::Amount(a)) => amount -= a,
                    None => {}
                }
                if let Some(Discount::Percent(p)) = input.discount {
                    amount -= amount * p / hundred;
                }
                match input.tax_mode {
                    TaxMode::Exclusive => amount + amount * l.tax_rate / hundred,
                    TaxMode::Inclusive => amount,
                }
            })
            .sum()
    }

    proptest! {
        #[test]
        fn totals_are_the_sum_of_their_parts(input in input()) {
            let Ok(p) = calculate(&input) else {
                return Err(TestCaseError::reject("a discount above its amount"));
            };
            let included: Vec<&LinePricing> = p.lines.iter().filter(|l| l.included).collect();
            prop_assert_eq!(p.total, p.net_total + p.tax_total);
            let after_discounts = p.subtotal - p.line_discounts - p.quote_discount;
            match input.tax_mode {
                TaxMode::Exclusive => prop_assert_eq!(p.net_total, after_discounts),
                TaxMode::Inclusive => prop_assert_eq!(p.total, after_discounts),
            }
            prop_assert_eq!(p.total, included.iter().map(|l| l.total).sum::<Decimal>());
            prop_assert_eq!(p.tax_total, p.taxes.iter().map(|t| t.tax).sum::<Decimal>());
            prop_assert_eq!(p.net_total, p.taxes.iter().map(|t| t.taxable).sum::<Decimal>());
            for l in &p.lines {
                prop_assert_eq!(l.total, l.net + l.tax);
                prop_assert_eq!(l.net + match input.tax_mode {
                    TaxMode::Exclusive => Decimal::ZERO,
                    TaxMode::Inclusive => l.tax,
                }, l.amount - l.line_discount - l.quote_discount);
                // Every amount sits on the minor unit.
                for v in [l.amount, l.line_discount, l.quote_discount, l.net, l.tax, l.total] {
                    prop_assert_eq!(v, input.currency.round(v));
                }
            }
        }

        #[test]
        fn discounts_never_make_a_line_negative(input in input()) {
            let p = match calculate(&input) {
                Ok(p) => p,
                // The only refusal of in-range input: a discount above its amount.
                Err(errors) => {
                    prop_assert!(errors.iter().all(|e| e.code == "discount_exceeds_amount"));
                    return Ok(());
                }
            };
            for l in &p.lines {
                prop_assert!(l.line_discount <= l.amount);
                prop_assert!(l.net >= Decimal::ZERO && l.tax >= Decimal::ZERO);
            }
        }

        #[test]
        fn rounding_drift_is_bounded(input in input()) {
            let Ok(p) = calculate(&input) else {
                return Err(TestCaseError::reject("a discount above its amount"));
            };
            let n = Decimal::from(input.lines.iter().filter(|l| l.included()).count());
            let bound = Decimal::TWO * input.currency.minor_unit() * n;
            let drift = (p.total - exact_total(&input)).abs();
            prop_assert!(drift <= bound, "drift {} over bound {}", drift, bound);
        }

        #[test]
        fn inclusive_and_exclusive_pricing_agree(
            // Rates whose inclusive prices stay within four decimals; percent
            // discounts, which mean the same with or without tax.
            lines in prop::collection::vec(price_line(&[0, 150], percent().boxed()), 1..12),
            discount in percent(),
        ) {
            let c = nzd();
            let exclusive = PricingInput { currency: c, tax_mode: TaxMode::Exclusive, lines: lines.clone(), discount };
            // The same prices with their tax added, unrounded.
            let inclusive_lines: Vec<PriceLine> = lines.iter().map(|l| PriceLine {
                unit_price: l.unit_price * (Decimal::ONE_HUNDRED + l.tax_rate) / Decimal::ONE_HUNDRED,
                ..l.clone()
            }).collect();
            let inclusive = PricingInput { currency: c, tax_mode: TaxMode::Inclusive, lines: inclusive_lines, discount };
            let (Ok(a), Ok(b)) = (calculate(&exclusive), calculate(&inclusive)) else {
                return Err(TestCaseError::reject("a discount above its amount"));
            };
            let n = Decimal::from(lines.iter().filter(|l| l.included()).count());
            let bound = Decimal::new(4, 0) * c.minor_unit() * n;
            prop_assert!((a.total - b.total).abs() <= bound, "{} vs {}", a.total, b.total);
            prop_assert!((a.tax_total - b.tax_total).abs() <= bound);
        }
    }
}
