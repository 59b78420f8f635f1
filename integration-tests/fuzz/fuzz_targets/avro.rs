//! One Avro record in the Confluent wire format (magic byte 0, big-endian schema id, Avro
//! binary body) decoded with the real Debezium writer schemas registered under ids 1 to 15, then
//! folded into a wide row against the sample catalog. Seeds name registered ids, so mutations of
//! the body are decoded with a real schema rather than refused at the header.
#![no_main]

use eavlake::decode::avro::AvroDecoder;
use eavlake::pivot::Pivot;
use eavlake_fuzz::{avro_decoder, pivot_event, sample_catalog};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static STATE: OnceLock<(AvroDecoder, eavlake::catalog::Catalog)> = OnceLock::new();
    let (decoder, catalog) = STATE.get_or_init(|| (avro_decoder(), sample_catalog()));
    if let Ok(event) = decoder.decode_ready(Some(data)) {
        pivot_event(&mut Pivot::new(9, 16), catalog, event);
    }
});
