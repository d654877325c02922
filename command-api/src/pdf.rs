//! `generateQuotePDF` and `getAvailableTemplates`: quotes rendered to PDF
//! with Typst, fully offline (the fonts are compiled into the binary).
//!
//! A template is a Typst file that reads the quote from `/data.json`. Two are
//! built in (`standard`, `compact`, under `templates/quotes/`). An
//! organization customizes one by placing a file of the same name, or a new
//! one, at `{quotes.templates_dir}/{organization id}/{name}.typ`
//! (`PIVOTAL_QUOTES__TEMPLATES_DIR`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use chrono::{Datelike, Utc};
use pivotal_domain::customer::CustomerState;
use pivotal_domain::organization::OrganizationState;
use pivotal_domain::pricing::{Discount, TaxMode};
use pivotal_domain::quote::QuoteState;
use pivotal_domain::values::FieldError;
use serde::Serialize;
use serde_json::json;
use typst::diag::{FileError, FileResult};
use typst::foundations::{Bytes, Datetime, Duration};
use typst::syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot};
use typst::text::{Font, FontBook};
use typst::utils::LazyHash;
use typst::{Library, LibraryExt, World};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Built-in templates: name, description, source.
const BUILT_IN: &[(&str, &str, &str)] = &[
    (
        "standard",
        "Serif, every detail: discounts per line, tax per rate, terms and notes",
        include_str!("../../templates/quotes/standard.typ"),
    ),
    (
        "compact",
        "One line per item in a monospaced table, totals at the end",
        include_str!("../../templates/quotes/compact.typ"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paper {
    A4,
    Letter,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateInfo {
    pub name: String,
    pub description: String,
    pub built_in: bool,
}

/// `getAvailableTemplates`: the built-in templates.
pub fn templates() -> Vec<TemplateInfo> {
    BUILT_IN
        .iter()
        .map(|(name, description, _)| TemplateInfo {
            name: (*name).to_owned(),
            description: (*description).to_owned(),
            built_in: true,
        })
        .collect()
}

/// The templates of one organization: its own files, then the built-in ones
/// it did not replace.
pub fn templates_of(dir: Option<&Path>, organization_id: uuid::Uuid) -> Vec<TemplateInfo> {
    let mut all = Vec::new();
    if let Some(dir) = dir
        && let Ok(entries) = std::fs::read_dir(dir.join(organization_id.to_string()))
    {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "typ")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                all.push(TemplateInfo {
                    name: stem.to_owned(),
                    description: "The organization's own template".into(),
                    built_in: false,
                });
            }
        }
    }
    for t in templates() {
        if !all.iter().any(|o| o.name == t.name) {
            all.push(t);
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

fn template_source(dir: Option<&Path>, organization_id: uuid::Uuid, name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return None;
    }
    if let Some(dir) = dir {
        let path = dir
            .join(organization_id.to_string())
            .join(format!("{name}.typ"));
        if let Ok(source) = std::fs::read_to_string(path) {
            return Some(source);
        }
    }
    BUILT_IN
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, source)| (*source).to_owned())
}

struct Fonts {
    book: LazyHash<FontBook>,
    fonts: Vec<Font>,
}

static FONTS: LazyLock<Fonts> = LazyLock::new(|| {
    let fonts: Vec<Font> = typst_assets::fonts()
        .flat_map(|data| Font::iter(Bytes::new(data)))
        .collect();
    Fonts {
        book: LazyHash::new(FontBook::from_fonts(&fonts)),
        fonts,
    }
});

static LIBRARY: LazyLock<LazyHash<Library>> = LazyLock::new(|| LazyHash::new(Library::default()));

fn file_id(path: &str) -> Option<FileId> {
    VirtualPath::new(path)
        .ok()
        .map(|vpath| RootedPath::new(VirtualRoot::Project, vpath).intern())
}

/// A world of two files: the template and the quote's data.
struct QuoteWorld {
    main: FileId,
    source: Source,
    data_id: FileId,
    data: Bytes,
}

impl World for QuoteWorld {
    fn library(&self) -> &LazyHash<Library> {
        &LIBRARY
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &FONTS.book
    }

    fn main(&self) -> FileId {
        self.main
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        if id == self.main {
            Ok(self.source.clone())
        } else {
            Err(FileError::NotFound(PathBuf::from("only /data.json exists")))
        }
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        if id == self.data_id {
            Ok(self.data.clone())
        } else {
            Err(FileError::NotFound(PathBuf::from("only /data.json exists")))
        }
    }

    fn font(&self, index: usize) -> Option<Font> {
        FONTS.fonts.get(index).cloned()
    }

    fn today(&self, _offset: Option<Duration>) -> Option<Datetime> {
        let today = Utc::now().date_naive();
        Datetime::from_ymd(
            today.year(),
            u8::try_from(today.month()).ok()?,
            u8::try_from(today.day()).ok()?,
        )
    }
}

fn discount_text(discount: Option<&Discount>, amount: rust_decimal::Decimal) -> String {
    match discount {
        None => "".into(),
        Some(Discount::Percent(p)) => format!("{}% ({amount})", p.normalize()),
        Some(Discount::Amount(_)) => amount.to_string(),
    }
}

/// The data a template sees as `/data.json`.
pub fn data(
    paper: Paper,
    org: &OrganizationState,
    customer: &CustomerState,
    quote: &QuoteState,
) -> serde_json::Value {
    let pricing = &quote.pricing;
    let address: Vec<String> = customer
        .billing
        .billing_address
        .as_ref()
        .map(|a| {
            [
                Some(a.line1.as_str().to_owned()),
                a.line2.as_ref().map(|l| l.as_str().to_owned()),
                Some(a.city.as_str().to_owned()),
                a.region.as_ref().map(|r| r.as_str().to_owned()),
                a.postal_code.as_ref().map(|p| p.as_str().to_owned()),
                Some(a.country.as_str().to_owned()),
            ]
            .into_iter()
            .flatten()
            .collect()
        })
        .unwrap_or_default();
    let lines: Vec<serde_json::Value> = quote
        .content
        .lines
        .iter()
        .zip(&pricing.lines)
        .enumerate()
        .map(|(i, (line, priced))| {
            json!({
                "number": i + 1,
                "description": line.description.as_str(),
                "quantity": line.quantity.normalize().to_string(),
                "unit": line.unit.as_str(),
                "unitPrice": line.unit_price.to_string(),
                "discount": discount_text(line.discount.as_ref(), priced.line_discount),
                "taxRate": priced.tax_rate.to_string(),
                "net": priced.net.to_string(),
                "tax": priced.tax.to_string(),
                "total": priced.total.to_string(),
                "optional": line.optional,
                "included": priced.included,
            })
        })
        .collect();
    json!({
        "paper": match paper { Paper::A4 => "a4", Paper::Letter => "us-letter" },
        "organization": {
            "name": org.name.as_str(),
            "taxNumber": org.settings.tax.registration_number.as_ref().map(|t| t.as_str()),
        },
        "customer": {
            "name": customer.legal_name.as_str(),
            "address": address,
        },
        "number": quote.number,
        "revision": quote.revision,
        "title": quote.content.title.as_str(),
        "description": quote.content.description,
        "issued": Utc::now().date_naive().to_string(),
        "validUntil": quote.content.valid_until.to_string(),
        "currency": quote.content.currency.as_str(),
        "taxMode": match quote.content.tax_mode {
            TaxMode::Exclusive => "excluding tax",
            TaxMode::Inclusive => "including tax",
        },
        "lines": lines,
        "taxes": pricing.taxes.iter().map(|t| json!({
            "rate": t.rate.normalize().to_string(),
            "taxable": t.taxable.to_string(),
            "tax": t.tax.to_string(),
        })).collect::<Vec<_>>(),
        "totals": {
            "subtotal": pricing.subtotal.to_string(),
            "lineDiscounts": pricing.line_discounts.to_string(),
            "quoteDiscount": pricing.quote_discount.to_string(),
            "discounts": (pricing.line_discounts + pricing.quote_discount).to_string(),
            "net": pricing.net_total.to_string(),
            "tax": pricing.tax_total.to_string(),
            "total": pricing.total.to_string(),
        },
        "terms": quote.content.terms,
        "notes": quote.content.notes,
    })
}

/// Compiles `template` with the quote's data into a PDF.
pub async fn render(
    dir: Option<&Path>,
    template: &str,
    paper: Paper,
    org: &OrganizationState,
    customer: &CustomerState,
    quote: &QuoteState,
) -> Result<Vec<u8>, ApiError> {
    let source = template_source(dir, org.id, template).ok_or_else(|| {
        ApiError::Validation(vec![FieldError::new(
            "/template",
            "unknown_template",
            format!("no template named {template}; see /v1/quote-templates"),
        )])
    })?;
    let data = serde_json::to_vec(&data(paper, org, customer, quote))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (main, data_id) = match (file_id("/main.typ"), file_id("/data.json")) {
        (Some(m), Some(d)) => (m, d),
        _ => return Err(ApiError::Internal("invalid template paths".into())),
    };
    let world = Arc::new(QuoteWorld {
        main,
        source: Source::new(main, source),
        data_id,
        data: Bytes::new(data),
    });
    let template = template.to_owned();
    tokio::task::spawn_blocking(move || {
        let compiled = typst::compile::<typst_layout::PagedDocument>(world.as_ref()).output;
        let document = compiled.map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(|e| e.message.to_string()).collect();
            ApiError::Internal(format!(
                "template {template} failed: {}",
                messages.join("; ")
            ))
        })?;
        typst_pdf::pdf(&document, &typst_pdf::PdfOptions::default()).map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(|e| e.message.to_string()).collect();
            ApiError::Internal(format!("PDF export failed: {}", messages.join("; ")))
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}
