//! The attribute catalog: lines of `attributes` change events (JSON, one per line) applied in
//! order, then the catalog saved and read back as the lake stores it (`_eavlake/catalog.json`),
//! which must give the same attributes. The raw input is also read as a catalog file: the lake's
//! copy is input too.
#![no_main]

use eavlake::catalog::Catalog;
use eavlake::decode::{Event, RowChange};
use eavlake_fuzz::json_decoders;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Catalog::from_json(data);
    let Some(mut decoder) = json_decoders().into_iter().next() else { return };
    let mut catalog = Catalog::default();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(Event::Change { op, source, row: RowChange::Attribute { before, after }, .. }) = decoder.decode(Some(line))
        {
            catalog.apply(op, before.as_ref(), after.as_ref(), Some(source.position));
        }
    }
    let saved = catalog.to_json();
    let read = Catalog::from_json(&saved).expect("a saved catalog reads back");
    assert_eq!(read.all(), catalog.all(), "catalog round trip");
    assert_eq!(read.to_json(), saved, "positions, removals and earlier states round trip");
});
