//! Demo data: one organization with its owner, three more people (one per
//! role a visitor may want to try) and a handful of customers, loaded
//! through the same command paths as the API (so events reach Kafka and the
//! read models). Loading twice changes nothing.

use chrono::Utc;
use pivotal_domain::customer::{Billing, Contact, Customer, CustomerCommand, NewCustomer};
use pivotal_domain::envelope::{Actor, CommandContext, EventMetadata};
use pivotal_domain::organization::{OrganizationSettings, QuoteSettings, TaxSettings};
use pivotal_domain::user::Profile;
use pivotal_domain::values::{
    Address, AddressInput, Currency, Email, Name, PaymentTerms, Phone, Preferences, Tags,
    TaxNumber, TimeZone,
};
use pivotal_event_store::PgPool;
use pivotal_event_store::commands::AggregateStore;
use pivotal_identity::{Identity, IdentityError, NewUser, Origin, SignUp};
use pivotal_settings::Settings;
use uuid::Uuid;

/// The demo organization.
pub const ORGANIZATION: Uuid = Uuid::from_u128(0x0192_f3a0_0000_7000_8000_0000_0000_d370);
/// The demo user (an owner of the demo organization).
pub const USER: Uuid = Uuid::from_u128(0x0192_f3a0_0000_7000_8000_0000_0000_0001);
/// Sign-in of the demo owner.
pub const OWNER_EMAIL: &str = "owner@demo.pivotal-flow.test";
/// Password of every demo person (development only).
pub const PASSWORD: &str = "pivotal demo password";
/// The other demo people: email and role.
pub const PEOPLE: &[(&str, &str, &str, &str)] = &[
    (
        "manager@demo.pivotal-flow.test",
        "Mere",
        "Manager",
        "manager",
    ),
    ("member@demo.pivotal-flow.test", "Tama", "Member", "member"),
    (
        "auditor@demo.pivotal-flow.test",
        "Ana",
        "Auditor",
        "auditor",
    ),
];

struct Seed {
    legal: &'static str,
    display: &'static str,
    email: &'static str,
    phone: &'static str,
    city: &'static str,
    country: &'static str,
    currency: &'static str,
    tax: &'static str,
    terms: i64,
    tags: &'static [&'static str],
}

const SEEDS: &[Seed] = &[
    Seed {
        legal: "Kowhai Consulting Limited",
        display: "Kowhai Consulting",
        email: "accounts@kowhai.example.com",
        phone: "+64 9 555 0100",
        city: "Auckland",
        country: "NZ",
        currency: "NZD",
        tax: "123-456-789",
        terms: 20,
        tags: &["consulting", "priority"],
    },
    Seed {
        legal: "Harbour Bridge Engineering Pty Ltd",
        display: "Harbour Bridge Engineering",
        email: "ap@harbourbridge.example.com",
        phone: "+61 2 5550 1234",
        city: "Sydney",
        country: "AU",
        currency: "AUD",
        tax: "51 824 753 556",
        terms: 30,
        tags: &["engineering"],
    },
    Seed {
        legal: "Northwind Analytics Inc.",
        display: "Northwind Analytics",
        email: "billing@northwind.example.com",
        phone: "+1 415 555 0199",
        city: "San Francisco",
        country: "US",
        currency: "USD",
        tax: "94-1234567",
        terms: 30,
        tags: &["analytics", "enterprise"],
    },
    Seed {
        legal: "Fjord Design AS",
        display: "Fjord Design",
        email: "faktura@fjord.example.com",
        phone: "+47 22 55 50 10",
        city: "Oslo",
        country: "NO",
        currency: "NOK",
        tax: "NO 999 888 777",
        terms: 14,
        tags: &["design"],
    },
    Seed {
        legal: "Tamarind Health Trust",
        display: "Tamarind Health",
        email: "finance@tamarind.example.com",
        phone: "+44 20 7946 0958",
        city: "London",
        country: "GB",
        currency: "GBP",
        tax: "GB123456789",
        terms: 30,
        tags: &["health", "nonprofit"],
    },
    Seed {
        legal: "Pohutukawa Retail Group Limited",
        display: "Pohutukawa Retail",
        email: "payables@pohutukawa.example.com",
        phone: "+64 4 555 0177",
        city: "Wellington",
        country: "NZ",
        currency: "NZD",
        tax: "987-654-321",
        terms: 20,
        tags: &["retail"],
    },
];

fn new_customer(seed: &Seed) -> anyhow::Result<NewCustomer> {
    let name = |raw| Name::parse("", raw).map_err(|e| anyhow::anyhow!("{e}"));
    Ok(NewCustomer {
        legal_name: name(seed.legal)?,
        display_name: name(seed.display)?,
        contact: Contact {
            email: Some(Email::parse("", seed.email).map_err(|e| anyhow::anyhow!("{e}"))?),
            phone: Some(Phone::parse("", seed.phone).map_err(|e| anyhow::anyhow!("{e}"))?),
        },
        billing: Billing {
            billing_address: Some(
                Address::parse(
                    "",
                    &AddressInput {
                        line1: Some("1 Example Street".into()),
                        city: Some(seed.city.into()),
                        country: Some(seed.country.into()),
                        ..AddressInput::default()
                    },
                )
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            ),
            tax_number: Some(TaxNumber::parse("", seed.tax).map_err(|e| anyhow::anyhow!("{e}"))?),
            currency: Currency::parse("", seed.currency).map_err(|e| anyhow::anyhow!("{e}"))?,
            payment_terms_days: PaymentTerms::parse("", seed.terms)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        },
        tags: Tags::parse(
            "",
            &seed
                .tags
                .iter()
                .map(|t| (*t).to_owned())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    })
}

fn origin() -> Origin {
    Origin {
        metadata: EventMetadata {
            correlation_id: "demo".into(),
            causation_id: None,
            source: "demo-loader".into(),
            user_agent: None,
            ip_address: None,
        },
    }
}

fn parse<T, E: std::fmt::Debug>(result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Creates the demo organization, its owner and the other demo people
/// unless they exist; returns how many people were created.
pub async fn load_people(settings: &Settings, pool: &PgPool) -> anyhow::Result<usize> {
    let (identity, _) = Identity::from_settings(settings, pool.clone()).await?;
    let actor = Actor {
        organization_id: ORGANIZATION,
        user_id: USER,
    };
    let mut created = 0;
    let (org, _) = identity
        .organizations()
        .load(&ORGANIZATION.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if org.state.is_none() {
        let sign_up = SignUp {
            organization_name: parse(Name::parse("", "Pivotal Demo Consulting"))?,
            settings: OrganizationSettings {
                default_currency: parse(Currency::parse("", "NZD"))?,
                time_zone: parse(TimeZone::parse("", "Pacific/Auckland"))?,
                fiscal_year_start_month: 4,
                tax: TaxSettings {
                    registration_number: None,
                    default_rate_basis_points: 1500,
                    prices_include_tax: false,
                },
                quotes: QuoteSettings {
                    approval_threshold: rust_decimal::Decimal::new(10_000, 0),
                    validity_days: 30,
                    default_rate_card_id: None,
                },
            },
            email: parse(Email::parse("", OWNER_EMAIL))?,
            password: PASSWORD.into(),
            profile: Profile {
                first_name: parse(Name::parse("", "Olivia"))?,
                last_name: parse(Name::parse("", "Owner"))?,
                phone: None,
                time_zone: parse(TimeZone::parse("", "Pacific/Auckland"))?,
                preferences: Preferences::default(),
            },
        };
        identity.establish(actor, sign_up, &origin()).await?;
        created += 1;
    }
    for (email, first, last, role) in PEOPLE {
        let person = NewUser {
            email: parse(Email::parse("", email))?,
            profile: Profile {
                first_name: parse(Name::parse("", first))?,
                last_name: parse(Name::parse("", last))?,
                phone: None,
                time_zone: parse(TimeZone::parse("", "Pacific/Auckland"))?,
                preferences: Preferences::default(),
            },
            roles: [(*role).to_owned()].into_iter().collect(),
            password: Some(PASSWORD.into()),
        };
        match identity.create_user(actor, person, &origin()).await {
            Ok(_) => created += 1,
            Err(IdentityError::EmailTaken) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(created)
}

/// Loads the demo customers once; returns how many were created.
pub async fn load(pool: &PgPool) -> anyhow::Result<usize> {
    let store = AggregateStore::<Customer>::new(pool.clone());
    let actor = Actor {
        organization_id: ORGANIZATION,
        user_id: USER,
    };
    let mut created = 0;
    for (index, seed) in SEEDS.iter().enumerate() {
        // Deterministic ids make loading idempotent.
        let id = Uuid::from_u128(0x0192_f3a0_0000_7000_8000_0000_0000_c000 + index as u128);
        let (existing, _) = store
            .load(&id.to_string())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if existing.state.is_some() {
            continue;
        }
        let context = CommandContext {
            actor,
            timestamp: Utc::now(),
            metadata: EventMetadata {
                correlation_id: format!("demo-{index}"),
                causation_id: None,
                source: "demo-loader".into(),
                user_agent: None,
                ip_address: None,
            },
            idempotency_key: None,
        };
        let command = CustomerCommand::Create {
            actor,
            customer_id: id,
            customer: new_customer(seed)?,
        };
        store
            .execute(&id.to_string(), Some(0), command, &context)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        created += 1;
    }
    Ok(created)
}

/// The demo rate card.
pub const RATE_CARD: Uuid = Uuid::from_u128(0x0192_f3a0_0000_7000_8000_0000_0000_ca00);

/// A rate card with three roles and two quotes (one draft, one sent),
/// unless the demo organization has quotes already; returns quotes created.
pub async fn load_quotes(pool: &PgPool) -> anyhow::Result<usize> {
    use pivotal_domain::pricing::{Discount, TaxMode};
    use pivotal_domain::quote::{Quote, QuoteCommand, QuoteContent, QuoteLine, RateSource};
    use pivotal_domain::rate_card::{Rate, RateCard, RateCardCommand, RateEntry, Unit};
    use rust_decimal::Decimal;

    let actor = Actor {
        organization_id: ORGANIZATION,
        user_id: USER,
    };
    let context = CommandContext {
        actor,
        timestamp: Utc::now(),
        metadata: EventMetadata {
            correlation_id: "demo-quotes".into(),
            causation_id: None,
            source: "demo-loader".into(),
            user_agent: None,
            ip_address: None,
        },
        idempotency_key: None,
    };
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let cards = AggregateStore::<RateCard>::new(pool.clone());
    let (card, _) = cards
        .load(&RATE_CARD.to_string())
        .await
        .map_err(|e| fail(&e))?;
    let roles = [
        ("Senior developer", Unit::Hours, 18_000),
        ("Designer", Unit::Hours, 15_000),
        ("Workshop", Unit::Days, 240_000),
    ];
    let entries: Vec<RateEntry> = roles
        .iter()
        .enumerate()
        .map(|(i, (name, unit, cents))| RateEntry {
            entry_id: Uuid::from_u128(0x0192_f3a0_0000_7000_8000_0000_0000_ce00 + i as u128),
            name: Name::parse("", name).unwrap_or_else(|_| unreachable!()),
            unit: *unit,
            rates: vec![Rate {
                currency: Currency::parse("", "NZD").unwrap_or_else(|_| unreachable!()),
                amount: Decimal::new(*cents, 2),
                effective_from: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            }],
        })
        .collect();
    if card.state.is_none() {
        cards
            .execute(
                &RATE_CARD.to_string(),
                Some(0),
                RateCardCommand::Create {
                    actor,
                    rate_card_id: RATE_CARD,
                    name: parse(Name::parse("", "Standard rates 2026"))?,
                    customer_id: None,
                },
                &context,
            )
            .await
            .map_err(|e| fail(&e))?;
        for entry in &entries {
            cards
                .execute(
                    &RATE_CARD.to_string(),
                    None,
                    RateCardCommand::PutEntry {
                        actor,
                        entry: entry.clone(),
                    },
                    &context,
                )
                .await
                .map_err(|e| fail(&e))?;
        }
    }
    let (existing,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM quote_number_counters WHERE organization_id = $1")
            .bind(ORGANIZATION)
            .fetch_one(pool)
            .await?;
    if existing > 0 {
        return Ok(0);
    }
    let quotes = AggregateStore::<Quote>::new(pool.clone());
    let line = |i: usize, quantity: i64| QuoteLine {
        line_id: Uuid::now_v7(),
        description: entries[i].name.clone(),
        quantity: Decimal::new(quantity, 0),
        unit: entries[i].unit,
        unit_price: entries[i].rates[0].amount,
        rate_source: Some(RateSource {
            rate_card_id: RATE_CARD,
            entry_id: entries[i].entry_id,
            entry_name: entries[i].name.as_str().to_owned(),
        }),
        discount: None,
        tax_rate: Decimal::new(15, 0),
        optional: false,
        selected: false,
    };
    let valid_until = Utc::now().date_naive() + chrono::Days::new(30);
    let contents = [
        QuoteContent {
            customer_id: Uuid::from_u128(0x0192_f3a0_0000_7000_8000_0000_0000_c000),
            title: parse(Name::parse("", "Website rebuild"))?,
            description: Some("Discovery workshop, design and build".into()),
            currency: parse(Currency::parse("", "NZD"))?,
            valid_until,
            terms: Some("50% on acceptance, the rest on delivery".into()),
            notes: None,
            tax_mode: TaxMode::Exclusive,
            discount: Some(Discount::Percent(Decimal::new(5, 0))),
            lines: vec![line(2, 1), line(1, 24), line(0, 80)],
        },
        QuoteContent {
            customer_id: Uuid::from_u128(0x0192_f3a0_0000_7000_8000_0000_0000_c005),
            title: parse(Name::parse("", "Point-of-sale integration"))?,
            description: None,
            currency: parse(Currency::parse("", "NZD"))?,
            valid_until,
            terms: None,
            notes: Some("Includes two weeks of support after go-live".into()),
            tax_mode: TaxMode::Exclusive,
            discount: None,
            lines: vec![line(0, 40)],
        },
    ];
    let mut created = 0;
    for (i, content) in contents.into_iter().enumerate() {
        let (quote, _) =
            pivotal_command_api::quotes::create_numbered(pool, &quotes, content, &context)
                .await
                .map_err(|e| fail(&e))?;
        created += 1;
        if i == 1 {
            // Within the demo's approval threshold: approved at once, then sent.
            for command in [
                QuoteCommand::SubmitForApproval {
                    actor,
                    threshold: Decimal::new(10_000, 0),
                },
                QuoteCommand::Send { actor },
            ] {
                quotes
                    .execute(&quote.id.to_string(), None, command, &context)
                    .await
                    .map_err(|e| fail(&e))?;
            }
        }
    }
    Ok(created)
}
