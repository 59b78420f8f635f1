//! One Debezium JSON record without schema (JsonConverter `schemas.enable=false`), decoded in
//! each decimal/time mode and folded into a wide row against the sample catalog.
#![no_main]

use eavlake::pivot::Pivot;
use eavlake_fuzz::{json_decoders, pivot_event, sample_catalog};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static CATALOG: OnceLock<eavlake::catalog::Catalog> = OnceLock::new();
    let catalog = CATALOG.get_or_init(sample_catalog);
    for mut decoder in json_decoders() {
        if let Ok(event) = decoder.decode(Some(data)) {
            pivot_event(&mut Pivot::new(9, 16), catalog, event);
        }
    }
});
