//! Hot attributes: the `entities.hot_attributes` JSONB, keyed by attribute name, read into typed
//! cells by the catalog.
//!
//! The JSONB is the whole hot state of the entity: a hot attribute absent from it is null. With
//! the before image, only the attributes whose JSON differs count as changed.

use super::PivotError;
use crate::catalog::EntityType;
use crate::columns::Value;
use crate::decode::json::{hot_decimal, hot_timestamp};
use crate::decode::scan::Beyond;
use crate::decode::scan::Cursor;
use crate::decode::value::{rescale, ValueError};
use crate::decode::DataType;
use crate::limits::Limits;
use std::borrow::Cow;

/// The entries of a JSON object with borrowed keys and raw values, in document order.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a str)>);

/// Buffers kept across calls of [`cells`], so that reading an object allocates nothing.
#[derive(Default)]
pub(super) struct Scratch {
    after: Vec<(Cow<'static, str>, &'static str)>,
    before: Vec<(Cow<'static, str>, &'static str)>,
}

/// The (empty) buffer `buf` as a vector of entries borrowing a shorter-lived JSON text. The
/// element types differ only in lifetime, so the in-place collect keeps the allocation; the
/// closure never runs on an empty vector.
fn lend<'a>(buf: &mut Vec<(Cow<'static, str>, &'static str)>) -> Vec<(Cow<'a, str>, &'a str)> {
    let mut v = std::mem::take(buf);
    v.clear();
    v.into_iter().map(|_| unreachable!("the buffer was cleared")).collect()
}

/// Gives the allocation of `entries` back to `buf` (see [`lend`]); owned keys are dropped.
fn give_back(buf: &mut Vec<(Cow<'static, str>, &'static str)>, mut entries: Entries<'_>) {
    entries.0.clear();
    *buf = entries.0.into_iter().map(|_| unreachable!("the entries were cleared")).collect();
}

/// Reads the object within `limits`: its size, its number of keys, and (counted by the same
/// scan) the nesting of its values, the object itself being the first level.
fn parse<'a>(
    json: &'a str,
    entity_id: i64,
    limits: &Limits,
    mut entries: Vec<(Cow<'a, str>, &'a str)>,
) -> Result<Entries<'a>, PivotError> {
    const WHAT: &str = "hot_attributes";
    if json.len() > limits.max_json_bytes {
        return Err(PivotError::JsonTooLarge { what: WHAT.into(), bytes: json.len(), limit: limits.max_json_bytes });
    }
    let mut c = Cursor::with_max_depth(json, limits.max_json_depth.saturating_sub(1));
    // PostgreSQL writes every jsonb the same way: read in one pass; anything else (or anything
    // wrong) member by member below.
    if c.jsonb_members(limits.max_attributes_per_row, &mut entries).is_some() {
        return Ok(Entries(entries));
    }
    let mut too_many = false;
    c.object(|c, key| {
        if entries.len() == limits.max_attributes_per_row {
            too_many = true;
            return Err(c.shape("too many keys"));
        }
        entries.push((key, c.raw()?));
        Ok(())
    })
    .and_then(|()| c.end())
    .map_err(|e| match e.beyond {
        _ if too_many => {
            PivotError::TooManyAttributes { entity_id, count: entries.len() + 1, limit: limits.max_attributes_per_row }
        }
        Some(Beyond::Depth) => PivotError::JsonTooDeep { what: WHAT.into(), limit: limits.max_json_depth },
        _ => PivotError::BadHotAttributes(e.to_string()),
    })?;
    Ok(Entries(entries))
}

fn find<'a>(entries: &Entries<'a>, name: &str) -> Option<&'a str> {
    entries.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// The entity whose `hot_attributes` are read.
pub(super) struct Of<'a> {
    pub entity_type: &'a str,
    pub entity_id: i64,
}

/// Typed cells of the hot attributes of one entity image, appended to `out` (left as it was on
/// error). `ty` is the entity's type in the catalog (`None`: it has no attributes). Fails on a
/// key the catalog does not know as a hot attribute of this tenant and entity type, and on a
/// value of the wrong type.
#[allow(clippy::too_many_arguments)] // one call site; the scratch buffers are its own
pub(super) fn cells(
    ty: Option<EntityType<'_>>,
    of: Of,
    after: &str,
    before: Option<&str>,
    scale: u32,
    limits: &Limits,
    scratch: &mut Scratch,
    out: &mut Vec<(i64, Option<Value>)>,
) -> Result<(), PivotError> {
    let Of { entity_type, entity_id } = of;
    let after = parse(after, entity_id, limits, lend(&mut scratch.after))?;
    let before = match before.map(|b| parse(b, entity_id, limits, lend(&mut scratch.before))).transpose() {
        Ok(before) => before,
        Err(e) => {
            give_back(&mut scratch.after, after);
            return Err(e);
        }
    };
    let start = out.len();
    let result = typed_cells(ty, entity_type, &after, before.as_ref(), scale, out);
    if result.is_err() {
        out.truncate(start);
    }
    give_back(&mut scratch.after, after);
    if let Some(before) = before {
        give_back(&mut scratch.before, before);
    }
    result
}

/// The body of [`cells`] once the objects are read.
fn typed_cells(
    ty: Option<EntityType<'_>>,
    entity_type: &str,
    after: &Entries<'_>,
    before: Option<&Entries<'_>>,
    scale: u32,
    out: &mut Vec<(i64, Option<Value>)>,
) -> Result<(), PivotError> {
    let mut found = 0;
    let result = changed_cells(ty, after, before, scale, out, &mut found);
    // When each key of `after` is a hot attribute that the diff found, every key is known and
    // hot: the check of each key by name (two hash lookups a key, a tenth of this function)
    // is left for when something is wrong, which it then names first, as it always did.
    if found < after.0.len() || result.is_err() {
        check_keys(ty, entity_type, after)?;
    }
    result
}

/// Fails on a key of `after` that is not a hot attribute of the type.
fn check_keys(ty: Option<EntityType<'_>>, entity_type: &str, after: &Entries<'_>) -> Result<(), PivotError> {
    for (key, _) in &after.0 {
        match ty.and_then(|t| t.by_name(key)) {
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
    Ok(())
}

/// The cells of the hot attributes that changed (all of them without a before image), counting
/// in `found` the attributes present in `after`.
fn changed_cells(
    ty: Option<EntityType<'_>>,
    after: &Entries<'_>,
    before: Option<&Entries<'_>>,
    scale: u32,
    out: &mut Vec<(i64, Option<Value>)>,
    found: &mut usize,
) -> Result<(), PivotError> {
    for attr in ty.into_iter().flat_map(|t| t.hot_attributes()) {
        let new = find(after, &attr.name);
        *found += usize::from(new.is_some());
        if let Some(before) = before {
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
    Ok(())
}

/// Why a JSON value is not a value of its attribute.
enum Typed {
    /// Another kind of value: what was found.
    Mismatch(String),
    /// The right kind, but it does not fit the column.
    OutOfRange(String),
}

/// A value error as [`Typed`]: out of range, or (malformed) a value of another kind.
fn ranged(e: ValueError, shown: impl Fn() -> Typed) -> Typed {
    match e {
        ValueError::OutOfRange(m) => Typed::OutOfRange(m),
        ValueError::Invalid(_) => shown(),
    }
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
        DataType::Json => Value::Text(raw.into()),
        DataType::Text => match Cursor::new(raw).string() {
            Ok(text) => Value::Text(text.into()),
            Err(_) => return Err(shown()),
        },
        DataType::Int => Value::Int(raw.parse::<i64>().map_err(|_| {
            // An integer too long for i64 is out of range, anything else another kind of value.
            let digits = raw.strip_prefix('-').unwrap_or(raw);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                Typed::OutOfRange(format!(
                    "`{}` is beyond the range of a 64-bit integer",
                    crate::decode::value::preview(raw)
                ))
            } else {
                shown()
            }
        })?),
        DataType::Bool => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(shown()),
        },
        DataType::Decimal => {
            let d = hot_decimal(raw).map_err(|e| ranged(e, shown))?;
            Value::Decimal(rescale(d, scale).map_err(|e| ranged(e, shown))?)
        }
        DataType::Timestamp => Value::Timestamp(hot_timestamp(raw).map_err(|e| ranged(e, shown))?),
    }))
}
