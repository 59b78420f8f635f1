//! Parquet encoding and decoding of lake objects: zstd, page statistics, row groups of
//! [`ROW_GROUP_ROWS`], rows sorted by entity_id (declared as the sorting column so engines can
//! prune), and eavlake's own key-value metadata (watermarks of current-state files).

use super::SinkError;
use crate::columns;
use arrow::array::Array;
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// Rows per row group: large enough for good compression and few footers, small enough that
/// a reader of one entity range touches little more than it needs.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// A key-value metadata entry of a Parquet file.
fn key_value(meta: &ParquetMetaData, key: &str) -> Option<String> {
    meta.file_metadata().key_value_metadata()?.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone())
}

/// The footer of a Parquet object read from its last bytes, without the rest (compaction's plan
/// needs only the key-value metadata of each current object).
pub struct ParquetFooter {
    meta: ParquetMetaData,
    /// The object's size in bytes.
    pub size: u64,
}

impl ParquetFooter {
    /// The footer from `tail`, the last bytes of an object `size` bytes long: `Ok(Err(n))` when
    /// it reaches further back, into the last `n` bytes.
    pub fn parse(path: &str, tail: &Bytes, size: u64) -> Result<Result<ParquetFooter, u64>, SinkError> {
        let mut reader = ParquetMetaDataReader::new();
        match reader.try_parse_sized(tail, size) {
            Ok(()) => {}
            Err(parquet::errors::ParquetError::NeedMoreData(n)) => return Ok(Err(n as u64)),
            Err(e) => return Err(SinkError::Parquet { path: path.to_string(), message: e.to_string() }),
        }
        let meta =
            reader.finish().map_err(|e| SinkError::Parquet { path: path.to_string(), message: e.to_string() })?;
        Ok(Ok(ParquetFooter { meta, size }))
    }

    /// A key-value metadata entry of the file.
    pub fn metadata(&self, key: &str) -> Option<String> {
        key_value(&self.meta, key)
    }
}

/// Encodes batches (all of one schema) into one Parquet object.
pub fn encode(path: &str, batches: &[RecordBatch], metadata: Vec<(String, String)>) -> Result<Bytes, SinkError> {
    let err = |e: parquet::errors::ParquetError| SinkError::Parquet { path: path.to_string(), message: e.to_string() };
    let Some(first) = batches.first() else {
        return Err(SinkError::Parquet { path: path.to_string(), message: "nothing to write".into() });
    };
    let schema = first.schema();
    let sorting = schema
        .index_of(columns::ENTITY_ID)
        .ok()
        .map(|i| vec![SortingColumn { column_idx: i as i32, descending: false, nulls_first: false }]);
    let entity_id_int64 = schema.field_with_name(columns::ENTITY_ID).is_ok_and(|f| f.data_type() == &DataType::Int64);
    let kv: Vec<KeyValue> = metadata.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(err)?))
        // Data pages v2: a page's values are compressed straight into the page, where v1 copies
        // them behind the levels first and then compresses into a buffer that zstd's bound makes
        // glibc move whole (1.3% of a run's instructions, 1.8% of its CPU); pages that zstd does
        // not shrink are stored plain. Read back alike by DuckDB, pyarrow, polars and Spark 4.3.
        .set_writer_version(WriterVersion::PARQUET_2_0)
        // v2 would otherwise pick delta encodings for columns without a dictionary: the values
        // keep the encodings measured below.
        .set_encoding(Encoding::PLAIN)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(sorting)
        .set_key_value_metadata(if kv.is_empty() { None } else { Some(kv) })
        .set_created_by(format!("eavlake {}", env!("CARGO_PKG_VERSION")));
    // Positions, ids, transactions and their times are nearly all distinct: a dictionary is
    // built and thrown away (measured on _tx_id and _source_ts: without one, 0.4% fewer
    // instructions for a run and 2.4% smaller change files).
    for name in [
        columns::ENTITY_ID,
        columns::SEQ,
        columns::LSN,
        columns::COMMIT_LSN,
        columns::KAFKA_OFFSET,
        columns::TX_ID,
        columns::SOURCE_TS,
    ] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    // Rows are sorted by entity_id: as deltas it is a few bits per row, and zstd has almost
    // nothing left to compress.
    if entity_id_int64 {
        props = props.set_column_encoding(ColumnPath::from(columns::ENTITY_ID), Encoding::DELTA_BINARY_PACKED);
    }
    // Positions, transactions and commit times of one file lie in a narrow range: as deltas they
    // take a third of their plain bytes before zstd sees them, which is then that much less work
    // (measured on 100K generated events: 1.5% fewer instructions for a run, same file sizes).
    for name in
        [columns::SEQ, columns::LSN, columns::COMMIT_LSN, columns::KAFKA_OFFSET, columns::TX_ID, columns::SOURCE_TS]
    {
        if schema
            .field_with_name(name)
            .is_ok_and(|f| matches!(f.data_type(), DataType::Int64 | DataType::Timestamp(..)))
        {
            props = props.set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED);
        }
    }
    // An EAV batch leaves most attribute columns empty. Compressing a page of nulls costs a
    // full zstd table reset (profiled: most of the encoder's time on small files) for a few
    // bytes, so such columns are stored plain.
    for (i, field) in schema.fields().iter().enumerate() {
        // Attribute values: zstd finds their repeats without a dictionary, which costs a hash
        // per value and a page of its own (measured on 100K generated events: 1.8% fewer
        // instructions for the run, change files 2.7% and current objects 4.2% smaller).
        let name = field.name().as_str();
        if !name.starts_with('_') && name != columns::TENANT_ID {
            props = props.set_column_dictionary_enabled(ColumnPath::from(name), false);
            // Text values in entity order have no order of their own: their minimum and
            // maximum span nearly everything in every page and row group, so they prune nothing,
            // and comparing every value to keep them was 1% of a run.
            if field.data_type() == &DataType::Utf8 {
                props = props.set_column_statistics_enabled(ColumnPath::from(name), EnabledStatistics::None);
            }
        }
        // Booleans are bit-packed, a file's tenant is one value and its operations three: their
        // pages are a few dozen bytes, which zstd cannot shrink (it made them larger) for the cost
        // of a frame each.
        let tiny = field.data_type() == &DataType::Boolean || name == columns::TENANT_ID || name == columns::OP;
        let all_null = batches.iter().all(|b| b.column(i).null_count() == b.num_rows());
        if tiny {
            props = props.set_column_compression(ColumnPath::from(name), Compression::UNCOMPRESSED);
        }
        if all_null && !field.data_type().is_nested() {
            props = props
                .set_column_compression(ColumnPath::from(name), Compression::UNCOMPRESSED)
                .set_column_dictionary_enabled(ColumnPath::from(name), false);
        }
    }
    let props = props.build();
    let mut writer = ArrowWriter::try_new(Vec::with_capacity(1 << 20), schema, Some(props)).map_err(err)?;
    for b in batches {
        writer.write(b).map_err(err)?;
    }
    Ok(Bytes::from(writer.into_inner().map_err(err)?))
}

/// A Parquet object opened for reading: its metadata, and its rows on demand.
pub struct ParquetObject {
    path: String,
    bytes: Bytes,
    meta: ArrowReaderMetadata,
}

impl ParquetObject {
    pub fn open(path: &str, bytes: Bytes) -> Result<ParquetObject, SinkError> {
        let meta = ArrowReaderMetadata::load(&bytes, Default::default())
            .map_err(|e| SinkError::Parquet { path: path.to_string(), message: e.to_string() })?;
        Ok(ParquetObject { path: path.to_string(), bytes, meta })
    }

    /// A key-value metadata entry of the file.
    pub fn metadata(&self, key: &str) -> Option<String> {
        key_value(self.meta.metadata(), key)
    }

    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.meta.schema().clone()
    }

    /// eavlake's own key-value metadata (`eavlake.*`), to carry over when the object is rewritten.
    pub fn eavlake_metadata(&self) -> Vec<(String, String)> {
        let Some(kv) = self.meta.metadata().file_metadata().key_value_metadata() else { return Vec::new() };
        kv.iter()
            .filter(|kv| kv.key.starts_with("eavlake."))
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
            .collect()
    }

    /// Reads every row.
    pub fn read_all(&self) -> Result<Vec<RecordBatch>, SinkError> {
        self.read((0..self.meta.metadata().num_row_groups()).collect())
    }

    /// Row groups whose entity_id statistics overlap `[lo, hi]` (all when there are none).
    pub fn row_groups_for(&self, lo: i64, hi: i64) -> Vec<usize> {
        use parquet::file::statistics::Statistics;
        let md = self.meta.metadata();
        let col = md.file_metadata().schema_descr().columns().iter().position(|c| c.name() == columns::ENTITY_ID);
        (0..md.num_row_groups())
            .filter(|&i| match col.and_then(|c| md.row_group(i).column(c).statistics()) {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(min), Some(max)) => *max >= lo && *min <= hi,
                    _ => true,
                },
                _ => true,
            })
            .collect()
    }

    /// Smallest and largest entity_id in the file, from statistics.
    pub fn entity_id_bounds(&self) -> Option<(i64, i64)> {
        use parquet::file::statistics::Statistics;
        let md = self.meta.metadata();
        let col = md.file_metadata().schema_descr().columns().iter().position(|c| c.name() == columns::ENTITY_ID)?;
        let mut bounds: Option<(i64, i64)> = None;
        for i in 0..md.num_row_groups() {
            let Some(Statistics::Int64(s)) = md.row_group(i).column(col).statistics() else { return None };
            let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) else { return None };
            bounds = Some(match bounds {
                None => (min, max),
                Some((a, b)) => (a.min(min), b.max(max)),
            });
        }
        bounds
    }

    /// The starts of the entity-id ranges of `range_size` that the file has rows in. From the
    /// statistics when they span at most two ranges; otherwise from the entity_id column, so a
    /// file holding ids 5 and 2,000,000,005 touches two ranges, not twenty thousand.
    pub fn entity_id_ranges(&self, range_size: i64) -> Result<std::collections::BTreeSet<i64>, SinkError> {
        use arrow::array::AsArray;
        let Some((min, max)) = self.entity_id_bounds() else { return Ok(Default::default()) };
        let (a, b) = (min.div_euclid(range_size), max.div_euclid(range_size));
        if b - a <= 1 {
            return Ok((a..=b).map(|r| r * range_size).collect());
        }
        let err = |m: String| SinkError::Parquet { path: self.path.clone(), message: m };
        let fields = self.meta.metadata().file_metadata().schema_descr();
        let Some(col) = fields.columns().iter().position(|c| c.name() == columns::ENTITY_ID) else {
            return Ok(Default::default());
        };
        let mask = parquet::arrow::ProjectionMask::leaves(fields, [col]);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(self.bytes.clone(), self.meta.clone())
            .with_projection(mask)
            .with_batch_size(65_536)
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut out = std::collections::BTreeSet::new();
        for batch in reader {
            let batch = batch.map_err(|e| err(e.to_string()))?;
            let ids = batch
                .column(0)
                .as_primitive_opt::<arrow::datatypes::Int64Type>()
                .ok_or_else(|| err("entity_id is not Int64".into()))?;
            out.extend(ids.values().iter().map(|id| id.div_euclid(range_size) * range_size));
        }
        Ok(out)
    }

    /// Reads the given row groups.
    pub fn read(&self, row_groups: Vec<usize>) -> Result<Vec<RecordBatch>, SinkError> {
        self.read_without(row_groups, &[], &[])
    }

    /// Reads the given row groups without the top-level columns named in `skip`: a column not
    /// read is neither decompressed nor decoded. The text columns (or lists of text) named in
    /// `dictionary` come as dictionary arrays, as Parquet stores them when their values repeat:
    /// each distinct value is decoded once, not once per row.
    pub fn read_without(
        &self,
        row_groups: Vec<usize>,
        skip: &[&str],
        dictionary: &[&str],
    ) -> Result<Vec<RecordBatch>, SinkError> {
        let err = |m: String| SinkError::Parquet { path: self.path.clone(), message: m };
        let meta = if dictionary.is_empty() {
            self.meta.clone()
        } else {
            let schema = self.meta.schema();
            let fields: Vec<FieldRef> = schema
                .fields()
                .iter()
                .map(|f| if dictionary.contains(&f.name().as_str()) { Arc::new(as_dictionary(f)) } else { f.clone() })
                .collect();
            let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
            ArrowReaderMetadata::try_new(self.meta.metadata().clone(), ArrowReaderOptions::new().with_schema(schema))
                .map_err(|e| err(e.to_string()))?
        };
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(self.bytes.clone(), meta);
        if !skip.is_empty() {
            let descr = self.meta.metadata().file_metadata().schema_descr();
            let roots = descr.root_schema().get_fields().iter().enumerate();
            let keep: Vec<usize> = roots.filter(|(_, f)| !skip.contains(&f.name())).map(|(i, _)| i).collect();
            builder = builder.with_projection(parquet::arrow::ProjectionMask::roots(descr, keep));
        }
        let reader =
            builder.with_row_groups(row_groups).with_batch_size(8192).build().map_err(|e| err(e.to_string()))?;
        reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(e.to_string()))
    }
}

/// `field` with its text (or its list's text items) as a dictionary of text; other types as they are.
fn as_dictionary(field: &Field) -> Field {
    let dictionary = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    match field.data_type() {
        DataType::Utf8 => field.clone().with_data_type(dictionary()),
        DataType::List(item) if item.data_type() == &DataType::Utf8 => {
            let item = item.as_ref().clone().with_data_type(dictionary());
            field.clone().with_data_type(DataType::List(Arc::new(item)))
        }
        _ => field.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use zstd::zstd_safe::{CParameter, DParameter};

    /// zstd contexts come from a pool (vendor/zstd-safe/EAVLAKE.md): one given back after use
    /// with a dictionary, another level, checksums and a small window limit must work exactly
    /// like a new one.
    #[test]
    fn zstd_contexts_reused_as_new() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        // zstd's one-shot call uses a context of its own, never one of the pool.
        let mut reference = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        zstd::zstd_safe::compress(&mut reference, &data, 1).unwrap();
        let dict = b"some dictionary bytes, repeated ".repeat(64);
        for _ in 0..8 {
            let mut c = zstd::bulk::Compressor::with_dictionary(19, &dict).unwrap();
            c.set_parameter(CParameter::ChecksumFlag(true)).unwrap();
            let framed = c.compress(&data).unwrap();
            assert_ne!(framed, reference);
            let mut d = zstd::bulk::Decompressor::with_dictionary(&dict).unwrap();
            assert_eq!(d.decompress(&framed, data.len()).unwrap(), data);
            d.set_parameter(DParameter::WindowLogMax(10)).unwrap();
        }
        let (cs, ds) = zstd::zstd_safe::pooled_contexts();
        assert!(cs > 0 && ds > 0, "no context was pooled: {cs} compressors, {ds} decompressors");
        for _ in 0..8 {
            let mut c = zstd::bulk::Compressor::new(1).unwrap();
            assert_eq!(c.compress(&data).unwrap(), reference);
            // A window limit of 2^10 left behind would refuse this frame.
            let mut d = zstd::bulk::Decompressor::new().unwrap();
            assert_eq!(d.decompress(&reference, data.len()).unwrap(), data);
        }
    }

    /// Files written one after the other (the second with the first's contexts) are the same
    /// bytes, and read back.
    #[test]
    fn zstd_contexts_files_identical() {
        let rows = 20_000;
        let ids = Int64Array::from_iter_values(0..rows);
        let labels = StringArray::from_iter_values((0..rows).map(|i| format!("label {}", i % 97)));
        let batch = RecordBatch::try_from_iter([
            (columns::ENTITY_ID, Arc::new(ids) as arrow::array::ArrayRef),
            ("label", Arc::new(labels) as arrow::array::ArrayRef),
        ])
        .unwrap();
        let first = encode("a.parquet", std::slice::from_ref(&batch), vec![]).unwrap();
        let second = encode("b.parquet", std::slice::from_ref(&batch), vec![]).unwrap();
        assert_eq!(first, second);
        for bytes in [first, second] {
            let object = ParquetObject::open("x.parquet", bytes).unwrap();
            let back = object.read_without(vec![0], &[], &[]).unwrap();
            assert_eq!(arrow::compute::concat_batches(&batch.schema(), &back).unwrap(), batch);
        }
    }

    /// Pages are written as data pages v2, each column keeping the encoding chosen for it
    /// (v2's own default for columns without a dictionary would be a delta encoding).
    #[test]
    fn data_pages_v2_with_chosen_encodings() {
        use parquet::column::page::Page;
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let rows = 5_000;
        // Each column as an `ArrayRef`, the one element type `try_from_iter` takes.
        let col = |a: arrow::array::ArrayRef| a;
        let batch = RecordBatch::try_from_iter([
            (columns::ENTITY_ID, col(Arc::new(Int64Array::from_iter_values(0..rows)))),
            (columns::SEQ, col(Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i * 3))))),
            ("note", col(Arc::new(StringArray::from_iter((0..rows).map(|i| (i % 3 > 0).then(|| format!("n{i}"))))))),
            ("score", col(Arc::new(Int64Array::from_iter((0..rows).map(|i| (i % 2 == 0).then_some(i * 7)))))),
            (
                columns::OP,
                col(Arc::new(StringArray::from_iter_values((0..rows).map(|i| ["c", "u", "d"][i as usize % 3])))),
            ),
        ])
        .unwrap();
        let bytes = encode("v2.parquet", std::slice::from_ref(&batch), vec![]).unwrap();
        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let expected = [
            (columns::ENTITY_ID, Encoding::DELTA_BINARY_PACKED),
            (columns::SEQ, Encoding::DELTA_BINARY_PACKED),
            ("note", Encoding::PLAIN),
            ("score", Encoding::PLAIN),
            (columns::OP, Encoding::RLE_DICTIONARY),
        ];
        for (i, (name, encoding)) in expected.into_iter().enumerate() {
            assert_eq!(reader.metadata().row_group(0).column(i).column_path().string(), name);
            let pages = reader.get_row_group(0).unwrap().get_column_page_reader(i).unwrap();
            let mut data_pages = 0;
            for page in pages {
                match page.unwrap() {
                    Page::DictionaryPage { .. } => {}
                    Page::DataPageV2 { encoding: e, .. } => {
                        assert_eq!(e, encoding, "{name}");
                        data_pages += 1;
                    }
                    other => panic!("{name}: a {:?} page", other.page_type()),
                }
            }
            assert!(data_pages > 0, "{name}");
        }
        let object = ParquetObject::open("v2.parquet", bytes).unwrap();
        let back = object.read_without(vec![0], &[], &[]).unwrap();
        assert_eq!(arrow::compute::concat_batches(&batch.schema(), &back).unwrap(), batch);
    }
}
