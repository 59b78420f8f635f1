//! Hot attributes: the `entities.hot_attributes` JSONB, keyed by attribute name, read into typed
//! cells by the catalog.
//!
//! The JSONB is the whole hot state of the entity: a hot attribute absent from it is null. With
//! the before image, only the attributes whose JSON differs count as changed.

use super::PivotError;
use crate::catalog::Catalog;
use crate::columns::Value;
use crate::decode::json::{hot_decimal, hot_timestamp};
use crate::decode::value::rescale;
use crate::decode::DataType;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The entries of a JSON object with borrowed keys and raw values, in document order.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn parse(json: &str) -> Result<Entries<'_>, PivotError> {
    serde_json::from_str(json).map_err(|e| PivotError::BadHotAttributes(e.to_string()))
}

fn find<'a>(entries: &'a Entries, name: &str) -> Option<&'a RawValue> {
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
            if old.map(|v| v.get()) == new.map(|v| v.get()) {
                continue;
            }
        } else if new.is_none() {
            // Without a before image the JSONB is the whole hot state: an absent key is null.
            out.push((attr.attribute_id, None));
            continue;
        }
        let value = match new {
            None => None,
            Some(raw) => typed(raw.get(), attr.data_type, scale).map_err(|e| match e {
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
        DataType::Text => Value::Text(serde_json::from_str::<String>(raw).map_err(|_| shown())?),
        DataType::Int => Value::Int(raw.parse::<i64>().map_err(|_| shown())?),
        DataType::Bool => Value::Bool(serde_json::from_str::<bool>(raw).map_err(|_| shown())?),
        DataType::Decimal => {
            let d = hot_decimal(raw).map_err(|_| shown())?;
            Value::Decimal(rescale(d, scale).map_err(Typed::OutOfRange)?)
        }
        DataType::Timestamp => Value::Timestamp(hot_timestamp(raw).map_err(|_| shown())?),
    }))
}
