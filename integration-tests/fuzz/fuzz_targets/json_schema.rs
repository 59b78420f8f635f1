//! One Debezium JSON record with its embedded schema (`{"schema":…,"payload":…}`, JsonConverter
//! `schemas.enable=true`), decoded in each decimal/time mode and folded into a wide row against
//! the sample catalog. The code is `json_plain`'s; the corpus is not: it starts from records
//! whose schema decides the decimal and timestamp codecs, so mutations reach the schema reader.
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
