//! The customers read model (`rm_customers`), and with it, kept by triggers
//! on that table, the customers per organization and status
//! (`rm_customer_counts`, ADR 0041).

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pivotal_domain::customer::{
    AGGREGATE_TYPE, CustomerArchived, CustomerBillingChanged, CustomerContactChanged,
    CustomerCreated, CustomerRenamed, CustomerTagsChanged,
};
use pivotal_domain::values::Address;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::framework::{Envelope, FastHash, Projection, ProjectionError};

#[derive(Debug, Clone, Copy)]
pub struct CustomersProjection;

/// The event's `data` as `T`, read straight from its JSON text.
fn data<'e, T: Deserialize<'e>>(event: &'e Envelope) -> Result<T, ProjectionError> {
    T::deserialize(&*event.data).map_err(|e| ProjectionError::Data(event.id, e.to_string()))
}

fn id(event: &Envelope) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id).map_err(|e| ProjectionError::Data(event.id, e.to_string()))
}

struct AddressColumns {
    line1: Option<String>,
    line2: Option<String>,
    city: Option<String>,
    region: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
}

impl AddressColumns {
    fn of(address: Option<&Address>) -> Self {
        let text = |n: &pivotal_domain::values::Name| n.as_str().to_owned();
        Self {
            line1: address.map(|a| text(&a.line1)),
            line2: address.and_then(|a| a.line2.as_ref().map(text)),
            city: address.map(|a| text(&a.city)),
            region: address.and_then(|a| a.region.as_ref().map(text)),
            postal_code: address.and_then(|a| a.postal_code.as_ref().map(text)),
            country: address.map(|a| a.country.as_str().to_owned()),
        }
    }
}

/// One row of `rm_customers`: folded in memory from the customer's events
/// here, read (and cached) as it is by the query API.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct CustomerRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub legal_name: String,
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub billing_line1: Option<String>,
    pub billing_line2: Option<String>,
    pub billing_city: Option<String>,
    pub billing_region: Option<String>,
    pub billing_postal_code: Option<String>,
    pub billing_country: Option<String>,
    pub tax_number: Option<String>,
    pub currency: String,
    pub payment_terms_days: i32,
    pub tags: Vec<String>,
    pub status: String,
    pub archive_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
    pub updated_by: Option<Uuid>,
}

const COLUMNS: &str = "organization_id, id, legal_name, display_name, email, phone,
    billing_line1, billing_line2, billing_city, billing_region, billing_postal_code, billing_country,
    tax_number, currency, payment_terms_days, tags, status, archive_reason, version,
    created_at, updated_at, created_by, updated_by";

impl CustomerRow {
    /// Every change records its version, time and author.
    fn touch(&mut self, event: &Envelope) {
        self.version = i64::try_from(event.version).unwrap_or(i64::MAX);
        self.updated_at = event.timestamp;
        self.updated_by = event.user_id;
    }

    fn set_billing(&mut self, address: Option<&Address>) {
        let a = AddressColumns::of(address);
        self.billing_line1 = a.line1;
        self.billing_line2 = a.line2;
        self.billing_city = a.city;
        self.billing_region = a.region;
        self.billing_postal_code = a.postal_code;
        self.billing_country = a.country;
    }
}

/// The row after `event`. Events of a customer whose row does not exist
/// (never created) change nothing, as an `UPDATE` of no row would not.
fn fold(
    row: Option<CustomerRow>,
    event: &Envelope,
) -> Result<Option<CustomerRow>, ProjectionError> {
    if event.event_type == "customer.created" {
        let e: CustomerCreated = data(event)?;
        let mut row = CustomerRow {
            organization_id: event.organization_id,
            id: id(event)?,
            legal_name: e.legal_name.as_str().to_owned(),
            display_name: e.display_name.as_str().to_owned(),
            email: e.email.as_ref().map(|v| v.as_str().to_owned()),
            phone: e.phone.as_ref().map(|v| v.as_str().to_owned()),
            billing_line1: None,
            billing_line2: None,
            billing_city: None,
            billing_region: None,
            billing_postal_code: None,
            billing_country: None,
            tax_number: e.tax_number.as_ref().map(|v| v.as_str().to_owned()),
            currency: e.currency.as_str().to_owned(),
            payment_terms_days: i32::from(e.payment_terms_days.days()),
            tags: e.tags.as_slice().to_vec(),
            status: "active".into(),
            archive_reason: None,
            version: 0,
            created_at: event.timestamp,
            updated_at: event.timestamp,
            created_by: event.user_id,
            updated_by: event.user_id,
        };
        row.set_billing(e.billing_address.as_ref());
        row.touch(event);
        return Ok(Some(row));
    }
    let Some(mut row) = row else {
        return Ok(None);
    };
    match event.event_type.as_str() {
        "customer.renamed" => {
            let e: CustomerRenamed = data(event)?;
            row.legal_name = e.legal_name.as_str().to_owned();
            row.display_name = e.display_name.as_str().to_owned();
        }
        "customer.contact.changed" => {
            let e: CustomerContactChanged = data(event)?;
            row.email = e.email.as_ref().map(|v| v.as_str().to_owned());
            row.phone = e.phone.as_ref().map(|v| v.as_str().to_owned());
        }
        "customer.billing.changed" => {
            let e: CustomerBillingChanged = data(event)?;
            row.set_billing(e.billing_address.as_ref());
            row.tax_number = e.tax_number.as_ref().map(|v| v.as_str().to_owned());
            row.currency = e.currency.as_str().to_owned();
            row.payment_terms_days = i32::from(e.payment_terms_days.days());
        }
        "customer.tags.changed" => {
            let e: CustomerTagsChanged = data(event)?;
            row.tags = e.tags.as_slice().to_vec();
        }
        "customer.archived" => {
            let e: CustomerArchived = data(event)?;
            row.status = "archived".into();
            row.archive_reason = e.reason;
        }
        "customer.restored" => {
            row.status = "active".into();
            row.archive_reason = None;
        }
        other => {
            // A newer producer's event type: keep the version moving, change nothing.
            tracing::warn!(event_type = other, event_id = %event.id, "unknown customer event ignored");
            return Ok(Some(row));
        }
    }
    row.touch(event);
    Ok(Some(row))
}

/// The current rows of the customers `keys` (organization, id) names, in
/// a map with room for `capacity` rows.
///
/// Read by id alone, through the key, in an unnamed statement planned with
/// the batch's ids (ADR 0039, 0058): a prepared `(organization_id, id) IN
/// (...)` kept a generic plan that, with no index on both columns, probed
/// an index led by the organization and read every row of it for each id.
/// A row under another organization than its key's is not that key's
/// customer, and is left out.
async fn load(
    conn: &mut PgConnection,
    keys: &[(Uuid, Uuid)],
    capacity: usize,
) -> Result<HashMap<(Uuid, Uuid), CustomerRow, FastHash>, ProjectionError> {
    let ids: Vec<Uuid> = keys.iter().map(|(_, id)| *id).collect();
    let rows: Vec<CustomerRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_customers WHERE id = ANY($1)"
    ))
    .bind(&ids)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    let wanted: HashSet<(Uuid, Uuid), FastHash> = keys.iter().copied().collect();
    let mut map = HashMap::with_capacity_and_hasher(capacity.max(rows.len()), FastHash::default());
    map.extend(
        rows.into_iter()
            .map(|r| ((r.organization_id, r.id), r))
            .filter(|(key, _)| wanted.contains(key)),
    );
    Ok(map)
}

/// Inserts or replaces `rows` in one statement. A row is keyed by its id
/// alone (ADR 0058); one of another organization under the same id is
/// left as it is, never overwritten.
async fn store(conn: &mut PgConnection, rows: &[CustomerRow]) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    // Columns borrow the rows' text instead of copying it.
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|r| r.$field).collect::<Vec<_>>()
        };
    }
    macro_rules! text {
        ($field:ident) => {
            rows.iter().map(|r| r.$field.as_str()).collect::<Vec<_>>()
        };
    }
    macro_rules! optional_text {
        ($field:ident) => {
            rows.iter().map(|r| r.$field.as_deref()).collect::<Vec<_>>()
        };
    }
    // Arrays of arrays must be rectangular, so each row's tags travel as
    // the text of an array, which PostgreSQL reads with the array type's
    // own input function (a JSON array turned into one took a subquery per
    // row).
    let tags: Vec<String> = rows.iter().map(|r| array_literal(&r.tags)).collect();
    let assignments = COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|c| !matches!(*c, "organization_id" | "id"))
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(&format!(
        "INSERT INTO rm_customers ({COLUMNS})
         SELECT o, i, ln, dn, em, ph, l1, l2, ci, re, pc, co, tn, cu, pt,
                tg::text[], st, ar, ve, ca, ua, cb, ub
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                     $13::text[], $14::text[], $15::int4[], $16::text[], $17::text[], $18::text[],
                     $19::int8[], $20::timestamptz[], $21::timestamptz[], $22::uuid[], $23::uuid[])
           AS u(o, i, ln, dn, em, ph, l1, l2, ci, re, pc, co, tn, cu, pt, tg, st, ar, ve, ca, ua, cb, ub)
         ON CONFLICT (id) DO UPDATE SET {assignments}
         WHERE rm_customers.organization_id = EXCLUDED.organization_id"
    ))
    .bind(column!(organization_id))
    .bind(column!(id))
    .bind(text!(legal_name))
    .bind(text!(display_name))
    .bind(optional_text!(email))
    .bind(optional_text!(phone))
    .bind(optional_text!(billing_line1))
    .bind(optional_text!(billing_line2))
    .bind(optional_text!(billing_city))
    .bind(optional_text!(billing_region))
    .bind(optional_text!(billing_postal_code))
    .bind(optional_text!(billing_country))
    .bind(optional_text!(tax_number))
    .bind(text!(currency))
    .bind(column!(payment_terms_days))
    .bind(tags)
    .bind(text!(status))
    .bind(optional_text!(archive_reason))
    .bind(column!(version))
    .bind(column!(created_at))
    .bind(column!(updated_at))
    .bind(column!(created_by))
    .bind(column!(updated_by))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The counts (organization, status) that writing `rows` moves: a row
/// new here adds to its status; a row whose status changed takes from the
/// one it had (`before`) and adds to the new one. Each once, in key order.
fn counts_moved<'r>(
    before: &'r HashMap<(Uuid, Uuid), String, FastHash>,
    rows: &'r [CustomerRow],
) -> BTreeSet<(Uuid, &'r str)> {
    let mut moved = BTreeSet::new();
    for row in rows {
        let old = before.get(&(row.organization_id, row.id));
        if old.is_some_and(|old| *old == row.status) {
            continue;
        }
        moved.insert((row.organization_id, row.status.as_str()));
        if let Some(old) = old {
            moved.insert((row.organization_id, old.as_str()));
        }
    }
    moved
}

/// Locks the counts `moved` names with `lock` (a statement calling one of
/// the migrations' `rm_*_counts_lock` functions with the organizations and
/// the statuses), all in one statement and in key order, before the write
/// whose triggers move them (ADR 0041, "Update"): two batches on different
/// partitions then wait for each other instead of deadlocking. Nothing is
/// sent when the batch moves no count.
pub(crate) async fn lock_counts(
    conn: &mut PgConnection,
    lock: &'static str,
    moved: &BTreeSet<(Uuid, &str)>,
) -> Result<(), ProjectionError> {
    if moved.is_empty() {
        return Ok(());
    }
    let (organizations, statuses): (Vec<Uuid>, Vec<&str>) = moved.iter().copied().unzip();
    sqlx::query(lock)
        .bind(organizations)
        .bind(statuses)
        .execute(conn)
        .await?;
    Ok(())
}

/// `items` as the text of a PostgreSQL array (`{"a","b"}`): each item
/// quoted, with its quotes and backslashes escaped.
fn array_literal(items: &[String]) -> String {
    let mut literal = String::with_capacity(2 + items.iter().map(|i| i.len() + 3).sum::<usize>());
    literal.push('{');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            literal.push(',');
        }
        literal.push('"');
        for c in item.chars() {
            if matches!(c, '"' | '\\') {
                literal.push('\\');
            }
            literal.push(c);
        }
        literal.push('"');
    }
    literal.push('}');
    literal
}

#[async_trait]
impl Projection for CustomersProjection {
    fn name(&self) -> &'static str {
        "customers"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[AGGREGATE_TYPE]
    }

    fn table(&self) -> &'static str {
        "rm_customers"
    }

    fn rows_per_aggregate(&self) -> bool {
        true
    }

    /// The rebuilt table gets the triggers that keep `rm_customer_counts`,
    /// and the counts are taken from it afresh (ADR 0041).
    fn after_switch(&self) -> &'static [&'static str] {
        &["SELECT public.rm_customer_counts_attach()"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &Envelope,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(conn, &[event]).await
    }

    /// Reads the rows of the batch's customers once, folds every event in
    /// memory and writes each changed row once.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[&Envelope],
    ) -> Result<(), ProjectionError> {
        let keys: Vec<(Uuid, Uuid)> = events
            .iter()
            .map(|event| Ok((event.organization_id, id(event)?)))
            .collect::<Result<_, ProjectionError>>()?;
        // Whether each customer's row is read: not when its first event
        // here is its creation, which starts the row afresh (and comes
        // before any row of it can exist).
        let mut read: HashMap<(Uuid, Uuid), bool, FastHash> =
            HashMap::with_capacity_and_hasher(keys.len(), FastHash::default());
        for (key, event) in keys.iter().zip(events) {
            read.entry(*key)
                .or_insert_with(|| event.event_type != "customer.created");
        }
        let existing: Vec<(Uuid, Uuid)> = read
            .iter()
            .filter_map(|(key, read)| read.then_some(*key))
            .collect();
        // Room for the rows the batch creates too, so the map never
        // rehashes.
        let mut rows = if existing.is_empty() {
            HashMap::with_capacity_and_hasher(read.len(), FastHash::default())
        } else {
            load(&mut *conn, &existing, read.len()).await?
        };
        // The statuses the batch's rows had before it, to know which
        // counts it moves.
        let before: HashMap<(Uuid, Uuid), String, FastHash> = rows
            .iter()
            .map(|(key, row)| (*key, row.status.clone()))
            .collect();
        for (key, event) in keys.into_iter().zip(events) {
            if let Some(row) = fold(rows.remove(&key), event)? {
                rows.insert(key, row);
            }
        }
        // Rows that exist after the batch are the ones its events touched
        // (a customer never created stays absent).
        let rows: Vec<CustomerRow> = rows.into_values().collect();
        lock_counts(
            &mut *conn,
            "SELECT rm_customer_counts_lock($1, $2)",
            &counts_moved(&before, &rows),
        )
        .await?;
        store(conn, &rows).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(organization_id: Uuid, status: &str) -> CustomerRow {
        CustomerRow {
            organization_id,
            id: Uuid::now_v7(),
            legal_name: "Alpha Limited".into(),
            display_name: "Alpha".into(),
            email: None,
            phone: None,
            billing_line1: None,
            billing_line2: None,
            billing_city: None,
            billing_region: None,
            billing_postal_code: None,
            billing_country: None,
            tax_number: None,
            currency: "NZD".into(),
            payment_terms_days: 20,
            tags: Vec::new(),
            status: status.into(),
            archive_reason: None,
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            created_by: None,
            updated_by: None,
        }
    }

    #[test]
    fn a_batch_moves_the_counts_of_its_creations_and_status_changes_only() {
        let (first, second) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let created = row(second, "active");
        let archived = row(first, "archived");
        let renamed = row(first, "active");
        let restored_twice = row(second, "archived");
        let before: HashMap<(Uuid, Uuid), String, FastHash> = [
            ((first, archived.id), "active".to_owned()),
            ((first, renamed.id), "active".to_owned()),
            ((second, restored_twice.id), "archived".to_owned()),
        ]
        .into_iter()
        .collect();
        let rows = [created, archived, renamed, restored_twice];
        let moved: Vec<(Uuid, &str)> = counts_moved(&before, &rows).into_iter().collect();
        assert_eq!(
            moved,
            [(first, "active"), (first, "archived"), (second, "active")]
        );
        // A batch of renames moves no count, so it locks none.
        assert!(counts_moved(&before, &rows[2..]).is_empty());
    }
}
