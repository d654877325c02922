//! The customers read model (`rm_customers`).

use async_trait::async_trait;
use pivotal_domain::customer::{
    AGGREGATE_TYPE, CustomerArchived, CustomerBillingChanged, CustomerContactChanged,
    CustomerCreated, CustomerRenamed, CustomerTagsChanged,
};
use pivotal_domain::values::Address;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::framework::{Envelope, Projection, ProjectionError};

#[derive(Debug, Clone, Copy)]
pub struct CustomersProjection;

fn data<T: DeserializeOwned>(event: &Envelope) -> Result<T, ProjectionError> {
    serde_json::from_value(event.data.clone())
        .map_err(|e| ProjectionError::Data(event.id, e.to_string()))
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

/// Common columns of every update: version, time and author.
const TOUCH: &str = "version = $3, updated_at = $4, updated_by = $5";

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

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &Envelope,
    ) -> Result<(), ProjectionError> {
        let customer_id = id(event)?;
        let version = i64::try_from(event.version).unwrap_or(i64::MAX);
        match event.event_type.as_str() {
            "customer.created" => {
                let e: CustomerCreated = data(event)?;
                let address = AddressColumns::of(e.billing_address.as_ref());
                sqlx::query(
                    "INSERT INTO rm_customers (organization_id, id, legal_name, display_name, email, phone,
                        billing_line1, billing_line2, billing_city, billing_region, billing_postal_code, billing_country,
                        tax_number, currency, payment_terms_days, tags, status, version,
                        created_at, updated_at, created_by, updated_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'active', $17,
                        $18, $18, $19, $19)",
                )
                .bind(event.organization_id)
                .bind(customer_id)
                .bind(e.legal_name.as_str())
                .bind(e.display_name.as_str())
                .bind(e.email.as_ref().map(|v| v.as_str()))
                .bind(e.phone.as_ref().map(|v| v.as_str()))
                .bind(address.line1)
                .bind(address.line2)
                .bind(address.city)
                .bind(address.region)
                .bind(address.postal_code)
                .bind(address.country)
                .bind(e.tax_number.as_ref().map(|v| v.as_str()))
                .bind(e.currency.as_str())
                .bind(i32::from(e.payment_terms_days.days()))
                .bind(e.tags.as_slice())
                .bind(version)
                .bind(event.timestamp)
                .bind(event.user_id)
                .execute(conn)
                .await?;
                return Ok(());
            }
            "customer.renamed" => {
                let e: CustomerRenamed = data(event)?;
                sqlx::query(&format!(
                    "UPDATE rm_customers SET legal_name = $6, display_name = $7, {TOUCH}
                     WHERE organization_id = $1 AND id = $2"
                ))
                .bind(event.organization_id)
                .bind(customer_id)
                .bind(version)
                .bind(event.timestamp)
                .bind(event.user_id)
                .bind(e.legal_name.as_str())
                .bind(e.display_name.as_str())
                .execute(conn)
                .await?;
            }
            "customer.contact.changed" => {
                let e: CustomerContactChanged = data(event)?;
                sqlx::query(&format!(
                    "UPDATE rm_customers SET email = $6, phone = $7, {TOUCH} WHERE organization_id = $1 AND id = $2"
                ))
                .bind(event.organization_id)
                .bind(customer_id)
                .bind(version)
                .bind(event.timestamp)
                .bind(event.user_id)
                .bind(e.email.as_ref().map(|v| v.as_str()))
                .bind(e.phone.as_ref().map(|v| v.as_str()))
                .execute(conn)
                .await?;
            }
            "customer.billing.changed" => {
                let e: CustomerBillingChanged = data(event)?;
                let a = AddressColumns::of(e.billing_address.as_ref());
                sqlx::query(&format!(
                    "UPDATE rm_customers SET billing_line1 = $6, billing_line2 = $7, billing_city = $8,
                        billing_region = $9, billing_postal_code = $10, billing_country = $11,
                        tax_number = $12, currency = $13, payment_terms_days = $14, {TOUCH}
                     WHERE organization_id = $1 AND id = $2"
                ))
                .bind(event.organization_id)
                .bind(customer_id)
                .bind(version)
                .bind(event.timestamp)
                .bind(event.user_id)
                .bind(a.line1)
                .bind(a.line2)
                .bind(a.city)
                .bind(a.region)
                .bind(a.postal_code)
                .bind(a.country)
                .bind(e.tax_number.as_ref().map(|v| v.as_str()))
                .bind(e.currency.as_str())
                .bind(i32::from(e.payment_terms_days.days()))
                .execute(conn)
                .await?;
            }
            "customer.tags.changed" => {
                let e: CustomerTagsChanged = data(event)?;
                sqlx::query(&format!(
                    "UPDATE rm_customers SET tags = $6, {TOUCH} WHERE organization_id = $1 AND id = $2"
                ))
                .bind(event.organization_id)
                .bind(customer_id)
                .bind(version)
                .bind(event.timestamp)
                .bind(event.user_id)
                .bind(e.tags.as_slice())
                .execute(conn)
                .await?;
            }
            "customer.archived" => {
                let e: CustomerArchived = data(event)?;
                sqlx::query(&format!(
                    "UPDATE rm_customers SET status = 'archived', archive_reason = $6, {TOUCH}
                     WHERE organization_id = $1 AND id = $2"
                ))
                .bind(event.organization_id)
                .bind(customer_id)
                .bind(version)
                .bind(event.timestamp)
                .bind(event.user_id)
                .bind(e.reason)
                .execute(conn)
                .await?;
            }
            "customer.restored" => {
                sqlx::query(&format!(
                    "UPDATE rm_customers SET status = 'active', archive_reason = NULL, {TOUCH}
                     WHERE organization_id = $1 AND id = $2"
                ))
                .bind(event.organization_id)
                .bind(customer_id)
                .bind(version)
                .bind(event.timestamp)
                .bind(event.user_id)
                .execute(conn)
                .await?;
            }
            other => {
                // A newer producer's event type: keep the version moving, change nothing.
                tracing::warn!(event_type = other, event_id = %event.id, "unknown customer event ignored");
            }
        }
        Ok(())
    }
}
