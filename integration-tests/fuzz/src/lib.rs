//! What the fuzz targets share: decoders in each configuration a record may meet, the Avro
//! writer schemas registered in advance, a catalog to pivot against, and the checks every
//! target makes of a decoded event.
//!
//! The targets hold the product's contract to account: no input makes a decoder, the catalog,
//! the pivot or a file run panic, hang or allocate without bound; bad input is an error (a dead
//! letter), never a crash.

use eavlake::catalog::Catalog;
use eavlake::decode::avro::AvroDecoder;
use eavlake::decode::json::JsonDecoder;
use eavlake::decode::registry::SchemaRegistry;
use eavlake::decode::{DecimalMode, DecodeOptions, Event, RowChange, TableNames, TimeMode};
use eavlake::pivot::{Origin, Pivot};
use std::sync::Arc;

/// Real Debezium 2.x writer schemas as Confluent's AvroConverter registers them, by schema id
/// (the id a fuzz input names in bytes 1..5): entity_values with each decimal and timestamp
/// encoding, entities, attributes, heartbeats, transaction metadata, logical messages and a
/// table eavlake does not read.
pub const AVRO_SCHEMAS: [(u32, &str); 15] = [
    (1, include_str!("../schemas/1.avsc")),   // entity_values, precise decimal, ZonedTimestamp
    (2, include_str!("../schemas/2.avsc")),   // entity_values, VariableScaleDecimal
    (3, include_str!("../schemas/3.avsc")),   // entity_values, string decimal
    (4, include_str!("../schemas/4.avsc")),   // entities
    (5, include_str!("../schemas/5.avsc")),   // attributes
    (6, include_str!("../schemas/6.avsc")),   // heartbeat
    (7, include_str!("../schemas/7.avsc")),   // transaction metadata
    (8, include_str!("../schemas/8.avsc")),   // logical decoding message
    (9, include_str!("../schemas/9.avsc")),   // another table (orders)
    (10, include_str!("../schemas/10.avsc")), // entity_values, double decimal
    (11, include_str!("../schemas/11.avsc")), // entity_values, MicroTimestamp
    (12, include_str!("../schemas/12.avsc")), // entity_values, NanoTimestamp
    (13, include_str!("../schemas/13.avsc")), // entity_values, timestamp-millis
    (14, include_str!("../schemas/14.avsc")), // entity_values, Date
    (15, include_str!("../schemas/15.avsc")), // optional heartbeat (union with null)
];

/// JSON decoders in the three decimal modes, each with another time mode: a record without a
/// schema is read differently by each.
pub fn json_decoders() -> Vec<JsonDecoder> {
    [
        (DecimalMode::Precise, TimeMode::Adaptive),
        (DecimalMode::String, TimeMode::Connect),
        (DecimalMode::Double, TimeMode::Nanoseconds),
    ]
    .into_iter()
    .map(|(decimal_mode, time_mode)| {
        JsonDecoder::new(DecodeOptions { decimal_mode, time_mode, decimal_scale: 9 }, TableNames::default())
    })
    .collect()
}

/// An Avro decoder ready for [`AVRO_SCHEMAS`]: registered in its registry's cache and prepared
/// (the decoder's plan for each worked out), so no HTTP request is ever made.
pub fn avro_decoder() -> AvroDecoder {
    // Port 9 (discard): never asked. An id the inputs name that is not registered is refused
    // by `decode_ready` without a request.
    let registry = SchemaRegistry::new("http://127.0.0.1:9").expect("a constant URL");
    for (id, text) in AVRO_SCHEMAS {
        registry.insert_json(id, text).unwrap_or_else(|e| panic!("schema {id}: {e}"));
    }
    let decoder = AvroDecoder::new(Arc::new(registry), DecodeOptions::default(), TableNames::default());
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    for (id, _) in AVRO_SCHEMAS {
        // Served from the registry's cache: `decode_ready` only decodes with prepared schemas.
        if runtime.block_on(decoder.prepare(id)).is_err() {
            panic!("schema {id} could not be prepared from the cache");
        }
    }
    decoder
}

/// The catalog of the sample fixture (its `attributes` records), so that decoded changes of the
/// fixture's shapes reach the pivot's typed paths.
pub fn sample_catalog() -> Catalog {
    let mut catalog = Catalog::default();
    let mut decoder = JsonDecoder::new(DecodeOptions::default(), TableNames::default());
    for line in include_str!("../../fixtures/sample.jsonl").lines() {
        if let Ok(Event::Change { op, source, row: RowChange::Attribute { before, after }, .. }) =
            decoder.decode(Some(line.as_bytes()))
        {
            catalog.apply(op, before.as_ref(), after.as_ref(), Some(source.position));
        }
    }
    assert!(!catalog.is_empty(), "the sample fixture defines attributes");
    catalog
}

/// Folds a decoded event into `pivot` as the pipeline would (errors are dead letters: fine).
pub fn pivot_event(pivot: &mut Pivot, catalog: &Catalog, event: Event) {
    if let Event::Change { op, source, tx, mut row } = event {
        let _ = pivot.apply(catalog, op, &source, tx.as_deref(), &mut row, &Origin { seq: 1, kafka: None });
        pivot.end_transaction(catalog);
    }
}
