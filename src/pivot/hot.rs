//! Hot attributes: the `entities.hot_attributes` JSONB, keyed by attribute name, read into typed
//! cells by the catalog.
//!
//! The JSONB is the whole hot state of the entity: a hot attribute absent from it is null. With
//! the before image, only the attributes whose JSON differs count as changed.

use super::PivotError;
use crate::catalog::Catalog;
use crate::columns::Value;
use crate::decode::json::{hot_decimal, hot_timestamp};
use crate::decode::scan::Cursor;
use crate::decode::value::rescale;
use crate::decode::DataType;
use std::borrow::Cow;

/// The entries of a JSON object with borrowed keys and raw values, in document order.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a str)>);

fn parse(json: &str) -> Result<Entries<'_>, PivotError> {
    let mut entries = Vec::with_capacity(8);
    let mut c = Cursor::new(json);
    c.object(|c, key| {
        entries.push((key, c.raw()?));
        Ok(())
    })
    .and_then(|()| c.end())
    .map_err(|e| PivotError::BadHotAttributes(e.to_string()))?;
    Ok(Entries(entries))
}

fn find<'a>(entries: &Entries<'a>, name: &str) -> Option<&'a str> {
    entries.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// Typed cells of the hot attributes of one entity image. Fails on a key the catalog does not
/// know as a hot attribute of this tenant and entity type, and on a value of the wrong type.
pub(super) fn cells(
    catalog: &Catalog,
    tenant_id: i64,
    entity_type: &str,
    after: &str,
    before: Option<&str>,
    scale: u32,
) -> Result<Vec<(i64, Option<Value>)>, PivotError> {
    let after = parse(after)?;
    let before = before.map(parse).transpose()?;
    for (key, _) in &after.0 {
        match catalog.by_name(tenant_id, entity_type, key) {
            Some(a) if a.is_hot => {}
            Some(a) => {
                return Err(PivotError::TypeMismatch {
                    attribute: a.name.to_string(),
                    expected: "a cold attribute (in entity_values)",
                    found: "a key of hot_attributes".into(),
                })
            }
            None => return Err(PivotError::UnknownAttribute { attribute: format!("`{key}` of {entity_type}") }),
        }
    }
    let mut out = Vec::new();
    for attr in catalog.hot_attributes(tenant_id, entity_type) {
        let new = find(&after, &attr.name);
        if let Some(before) = &before {
            let old = find(before, &attr.name);
            if old == new {
                continue;
            }
        } else if new.is_none() {
            // Without a before image the JSONB is the whole hot state: an absent key is null.
            out.push((attr.attribute_id, None));
            continue;
        }
        let value = match new {
            None => None,
            Some(raw) => typed(raw, attr.data_type, scale).map_err(|e| match e {
                Typed::Mismatch(found) => PivotError::TypeMismatch {
                    attribute: attr.name.to_string(),
                    expected: attr.data_type.as_str(),
                    found,
                },
                Typed::OutOfRange(message) => PivotError::OutOfRange { attribute: attr.name.to_string(), message },
            })?,
        };
        out.push((attr.attribute_id, value));
    }
    Ok(out)
}

/// Why a JSON value is not a value of its attribute.
enum Typed {
    /// Another kind of value: what was found.
    Mismatch(String),
    /// The right kind, but it does not fit the column.
    OutOfRange(String),
}

/// One JSON value as `data_type`.
fn typed(raw: &str, data_type: DataType, scale: u32) -> Result<Option<Value>, Typed> {
    if raw == "null" {
        return Ok(None);
    }
    let shown = || {
        let mut s: String = raw.chars().take(40).collect();
        if raw.len() > s.len() {
            s.push('…');
        }
        Typed::Mismatch(format!("`{s}`"))
    };
    Ok(Some(match data_type {
        DataType::Json => Value::Text(raw.to_string()),
        DataType::Text => match Cursor::new(raw).string() {
            Ok(text) => Value::Text(text.into_owned()),
            Err(_) => return Err(shown()),
        },
        DataType::Int => Value::Int(raw.parse::<i64>().map_err(|_| shown())?),
        DataType::Bool => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(shown()),
        },
        DataType::Decimal => {
            let d = hot_decimal(raw).map_err(|_| shown())?;
            Value::Decimal(rescale(d, scale).map_err(Typed::OutOfRange)?)
        }
        DataType::Timestamp => Value::Timestamp(hot_timestamp(raw).map_err(|_| shown())?),
    }))
}
