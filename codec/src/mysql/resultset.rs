//! Result sets: column count, ColumnDefinition41, COM_STMT_PREPARE_OK, text rows and binary rows.

use bytes::{BufMut, Bytes, BytesMut};

use super::consts::column_flag;
use super::value::{self, Value};
use super::wire::{NULL_MARKER, Reader, put_lenenc_bytes, put_lenenc_int};
use super::{MysqlError, Result};

/// Parses the column-count packet that starts a result set.
pub fn decode_column_count(payload: Bytes) -> Result<u64> {
    let mut r = Reader::new(payload);
    let n = r.lenenc_int("column count")?;
    r.finish("column count")?;
    Ok(n)
}

/// Parses a column-count packet that may carry MariaDB's metadata-follows byte (a connection that
/// negotiated MARIADB_CLIENT_CACHE_METADATA): returns the count and the classic payload without
/// that byte (a slice of `payload`). A byte of 0 — definitions left out, which only an execution
/// of a prepared statement gets — is refused, as is anything else after the count.
pub fn split_column_count(payload: &Bytes) -> Result<(u64, Bytes)> {
    let mut pos = 0;
    let n = super::wire::lenenc_int_at(payload, &mut pos, "column count")?;
    match &payload[pos..] {
        [] => Ok((n, payload.clone())),
        [1] => Ok((n, payload.slice(..pos))),
        [0] => Err(MysqlError::Malformed(
            "a result without its column definitions".into(),
        )),
        rest => Err(MysqlError::TrailingBytes(rest.len(), "column count")),
    }
}

/// Appends a column-count payload.
pub fn encode_column_count(n: u64, out: &mut BytesMut) {
    put_lenenc_int(out, n);
}

/// A column definition (protocol 4.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnDefinition {
    /// Always `def`.
    pub catalog: Bytes,
    /// Database.
    pub schema: Bytes,
    /// Table alias.
    pub table: Bytes,
    /// Physical table.
    pub org_table: Bytes,
    /// Column alias.
    pub name: Bytes,
    /// Physical column.
    pub org_name: Bytes,
    /// Collation id (63 = binary).
    pub charset: u16,
    /// Maximum display length.
    pub column_length: u32,
    /// Column type (`consts::column_type`).
    pub column_type: u8,
    /// Column flags (`consts::column_flag`).
    pub flags: u16,
    /// Decimals (fractional digits; 31/39 for "not fixed").
    pub decimals: u8,
    /// Default values (COM_FIELD_LIST replies only).
    pub default_values: Option<Bytes>,
    /// The collation id the values compare by, when the proxy learned it apart from `charset`
    /// (under a normal login a server puts the connection's result collation in `charset`, which
    /// tells how the values are encoded on the wire, not how the column compares): set from
    /// `COLLATION(expr)` by the sharding merges. Never encoded: clients see `charset`.
    pub compare_collation: Option<u16>,
}

impl ColumnDefinition {
    /// A definition for a proxy-generated column (`def`, no schema/table).
    pub fn new(
        name: &str,
        column_type: u8,
        charset: u16,
        column_length: u32,
        flags: u16,
        decimals: u8,
    ) -> Self {
        ColumnDefinition {
            catalog: Bytes::from_static(b"def"),
            name: Bytes::copy_from_slice(name.as_bytes()),
            org_name: Bytes::copy_from_slice(name.as_bytes()),
            charset,
            column_length,
            column_type,
            flags,
            decimals,
            ..Default::default()
        }
    }

    /// Whether the column is UNSIGNED.
    pub fn is_unsigned(&self) -> bool {
        self.flags & column_flag::UNSIGNED != 0
    }

    /// Parses the payload.
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let catalog = r.lenenc_bytes("catalog")?;
        let schema = r.lenenc_bytes("schema")?;
        let table = r.lenenc_bytes("table")?;
        let org_table = r.lenenc_bytes("org_table")?;
        let name = r.lenenc_bytes("name")?;
        let org_name = r.lenenc_bytes("org_name")?;
        let fixed = r.lenenc_int("fixed fields length")?;
        if fixed != 0x0C {
            return Err(MysqlError::Malformed(format!(
                "column definition fixed length {fixed}"
            )));
        }
        let charset = r.u16("charset")?;
        let column_length = r.u32("column length")?;
        let column_type = r.u8("column type")?;
        let flags = r.u16("column flags")?;
        let decimals = r.u8("decimals")?;
        r.skip(2, "filler")?;
        let default_values = if r.is_empty() { None } else { Some(r.rest()) };
        Ok(ColumnDefinition {
            catalog,
            schema,
            table,
            org_table,
            name,
            org_name,
            charset,
            column_length,
            column_type,
            flags,
            decimals,
            default_values,
            compare_collation: None,
        })
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        for s in [
            &self.catalog,
            &self.schema,
            &self.table,
            &self.org_table,
            &self.name,
            &self.org_name,
        ] {
            put_lenenc_bytes(out, s);
        }
        out.put_u8(0x0C);
        out.put_u16_le(self.charset);
        out.put_u32_le(self.column_length);
        out.put_u8(self.column_type);
        out.put_u16_le(self.flags);
        out.put_u8(self.decimals);
        out.put_u16(0);
        if let Some(d) = &self.default_values {
            out.put_slice(d);
        }
    }
}

/// The reply to COM_STMT_PREPARE (followed by parameter and column definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StmtPrepareOk {
    /// Statement id for EXECUTE/CLOSE/....
    pub statement_id: u32,
    /// Number of result columns.
    pub num_columns: u16,
    /// Number of `?` parameters.
    pub num_params: u16,
    /// Warning count.
    pub warnings: u16,
}

impl StmtPrepareOk {
    /// Parses the payload.
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let h = r.u8("header")?;
        if h != 0 {
            return Err(MysqlError::UnexpectedHeader {
                header: h,
                what: "COM_STMT_PREPARE_OK",
            });
        }
        let statement_id = r.u32("statement id")?;
        let num_columns = r.u16("column count")?;
        let num_params = r.u16("param count")?;
        r.skip(1, "filler")?;
        // The warning count is optional in very old servers.
        let warnings = if r.is_empty() { 0 } else { r.u16("warnings")? };
        r.finish("COM_STMT_PREPARE_OK")?;
        Ok(StmtPrepareOk {
            statement_id,
            num_columns,
            num_params,
            warnings,
        })
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(0);
        out.put_u32_le(self.statement_id);
        out.put_u16_le(self.num_columns);
        out.put_u16_le(self.num_params);
        out.put_u8(0);
        out.put_u16_le(self.warnings);
    }
}

/// A text-protocol row: one cell per column, `None` for NULL; cells are slices of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextRow {
    /// The cells in column order.
    pub cells: Vec<Option<Bytes>>,
}

impl TextRow {
    /// Parses a row payload with `num_columns` cells.
    pub fn decode(payload: Bytes, num_columns: usize) -> Result<Self> {
        let mut cells = Vec::with_capacity(num_columns);
        Self::decode_into(payload, num_columns, &mut cells)?;
        Ok(TextRow { cells })
    }

    /// Parses a row payload into `cells` (cleared first), so a caller can reuse one vector for
    /// every row of a result set.
    pub fn decode_into(
        payload: Bytes,
        num_columns: usize,
        cells: &mut Vec<Option<Bytes>>,
    ) -> Result<()> {
        cells.clear();
        let mut r = Reader::new(payload);
        for _ in 0..num_columns {
            cells.push(r.lenenc_bytes_or_null("text cell")?);
        }
        r.finish("text row")
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        for c in &self.cells {
            match c {
                Some(b) => put_lenenc_bytes(out, b),
                None => out.put_u8(NULL_MARKER),
            }
        }
    }

    /// Converts the cells to typed values using the column definitions.
    pub fn values(&self, columns: &[ColumnDefinition]) -> Result<Vec<Value>> {
        if columns.len() != self.cells.len() {
            return Err(MysqlError::Malformed("row/column count mismatch".into()));
        }
        self.cells
            .iter()
            .zip(columns)
            .map(|(c, col)| value::decode_text(c.as_ref(), col))
            .collect()
    }

    /// Appends a text row payload built from typed values.
    pub fn encode_values(
        values: &[Value],
        columns: &[ColumnDefinition],
        out: &mut BytesMut,
    ) -> Result<()> {
        if columns.len() != values.len() {
            return Err(MysqlError::Malformed("row/column count mismatch".into()));
        }
        for (v, col) in values.iter().zip(columns) {
            value::encode_text(v, col, out)?;
        }
        Ok(())
    }
}

/// A binary-protocol row (COM_STMT_EXECUTE results) decoded into typed values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BinaryRow {
    /// The values in column order.
    pub values: Vec<Value>,
}

impl BinaryRow {
    /// Parses a row payload (header 0x00, NULL bitmap with offset 2, values).
    pub fn decode(payload: Bytes, columns: &[ColumnDefinition]) -> Result<Self> {
        let mut r = Reader::new(payload);
        let h = r.u8("binary row header")?;
        if h != 0 {
            return Err(MysqlError::UnexpectedHeader {
                header: h,
                what: "binary row",
            });
        }
        let bitmap = r.bytes((columns.len() + 9) / 8, "null bitmap")?;
        let mut values = Vec::with_capacity(columns.len());
        for (i, col) in columns.iter().enumerate() {
            let bit = i + 2;
            if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
                values.push(Value::Null);
            } else {
                values.push(value::decode_binary(
                    &mut r,
                    col.column_type,
                    col.is_unsigned(),
                )?);
            }
        }
        r.finish("binary row")?;
        Ok(BinaryRow { values })
    }

    /// Appends the payload.
    pub fn encode(&self, columns: &[ColumnDefinition], out: &mut BytesMut) -> Result<()> {
        if columns.len() != self.values.len() {
            return Err(MysqlError::Malformed("row/column count mismatch".into()));
        }
        out.put_u8(0);
        let start = out.len();
        let bitmap_len = (columns.len() + 9) / 8;
        out.put_bytes(0, bitmap_len);
        for (i, (v, col)) in self.values.iter().zip(columns).enumerate() {
            if matches!(v, Value::Null) {
                let bit = i + 2;
                out[start + bit / 8] |= 1 << (bit % 8);
            } else {
                value::encode_binary(v, col.column_type, out)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn column_count_with_and_without_the_metadata_byte() {
        let classic = Bytes::from_static(&[3]);
        assert_eq!(split_column_count(&classic).unwrap(), (3, classic.clone()));
        let flagged = Bytes::from_static(&[3, 1]);
        assert_eq!(split_column_count(&flagged).unwrap(), (3, classic));
        assert!(split_column_count(&Bytes::from_static(&[3, 0])).is_err());
        assert!(split_column_count(&Bytes::from_static(&[3, 1, 1])).is_err());
        let wide = Bytes::from_static(&[0xFC, 0x10, 0x01, 1]);
        assert_eq!(split_column_count(&wide).unwrap(), (0x110, wide.slice(..3)));
    }

    use super::*;
    use crate::mysql::consts::{charset, column_type as ty};

    #[test]
    fn column_definition_exact() {
        let c = ColumnDefinition::new(
            "id",
            ty::LONG,
            charset::BINARY,
            11,
            column_flag::NOT_NULL,
            0,
        );
        let mut out = BytesMut::new();
        c.encode(&mut out);
        let expected: &[u8] = &[
            3, b'd', b'e', b'f', 0, 0, 0, 2, b'i', b'd', 2, b'i', b'd', 0x0C, 63, 0, 11, 0, 0, 0,
            3, 1, 0, 0, 0, 0,
        ];
        assert_eq!(&out[..], expected);
        assert_eq!(ColumnDefinition::decode(out.freeze()).unwrap(), c);
    }

    #[test]
    fn text_and_binary_rows() {
        let payload = Bytes::from_static(b"\x011\xfb\x03abc");
        let row = TextRow::decode(payload.clone(), 3).unwrap();
        assert_eq!(row.cells[1], None);
        let mut out = BytesMut::new();
        row.encode(&mut out);
        assert_eq!(out.freeze(), payload);
        assert!(TextRow::decode(payload.slice(..4), 3).is_err());

        let cols = [
            ColumnDefinition::new("a", ty::LONGLONG, 63, 20, 0, 0),
            ColumnDefinition::new("b", ty::VAR_STRING, 45, 20, 0, 0),
        ];
        let row = BinaryRow {
            values: vec![Value::Int(-2), Value::Null],
        };
        let mut out = BytesMut::new();
        row.encode(&cols, &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[0, 0b1000, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        assert_eq!(BinaryRow::decode(out.freeze(), &cols).unwrap(), row);
    }
}
