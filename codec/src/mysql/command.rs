//! Command-phase requests (`COM_*`): decoded from a client payload and encoded back.

use bytes::{BufMut, Bytes, BytesMut};

use super::consts::com;
use super::handshake::{decode_attrs, encode_attrs};
use super::value::{self, Value};
use super::wire::{Reader, put_nul_bytes};
use super::{MysqlError, Result};

/// A client command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// COM_QUIT.
    Quit,
    /// COM_INIT_DB: switch the default schema.
    InitDb(Bytes),
    /// COM_QUERY: SQL text (query attributes are not negotiated by Furrow).
    Query(Bytes),
    /// COM_FIELD_LIST: columns of a table matching a wildcard.
    FieldList {
        /// Table name.
        table: Bytes,
        /// Column wildcard (may be empty).
        wildcard: Bytes,
    },
    /// COM_STATISTICS.
    Statistics,
    /// COM_PING.
    Ping,
    /// COM_CHANGE_USER.
    ChangeUser(ChangeUser),
    /// COM_STMT_PREPARE: SQL text with `?` placeholders.
    StmtPrepare(Bytes),
    /// COM_STMT_EXECUTE.
    StmtExecute(StmtExecute),
    /// COM_STMT_SEND_LONG_DATA.
    StmtSendLongData {
        /// Statement id.
        statement_id: u32,
        /// Parameter index.
        param_id: u16,
        /// A chunk of the parameter's data.
        data: Bytes,
    },
    /// COM_STMT_CLOSE (no reply).
    StmtClose(u32),
    /// COM_STMT_RESET.
    StmtReset(u32),
    /// COM_STMT_FETCH: rows from an open cursor.
    StmtFetch {
        /// Statement id.
        statement_id: u32,
        /// Number of rows to fetch.
        num_rows: u32,
    },
    /// COM_RESET_CONNECTION.
    ResetConnection,
    /// COM_SET_OPTION (0 = multi-statements on, 1 = off).
    SetOption(u16),
    /// Any other command byte, kept verbatim.
    Other {
        /// The command byte.
        code: u8,
        /// The rest of the payload.
        body: Bytes,
    },
}

/// COM_CHANGE_USER fields. Optional trailing fields are decoded when present.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeUser {
    /// User name.
    pub username: Bytes,
    /// Auth response (length-prefixed with one byte on the wire).
    pub auth_response: Bytes,
    /// New default schema.
    pub database: Bytes,
    /// Client collation id.
    pub charset: Option<u16>,
    /// Auth plugin name.
    pub auth_plugin_name: Option<Bytes>,
    /// Connection attributes.
    pub connect_attrs: Option<Vec<(Bytes, Bytes)>>,
}

/// COM_STMT_EXECUTE: the fixed header is decoded; the parameter block needs the statement's
/// parameter count and is decoded with [`StmtExecute::params`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StmtExecute {
    /// Statement id.
    pub statement_id: u32,
    /// Cursor flags (0 = no cursor, 1 = read-only cursor, ...).
    pub flags: u8,
    /// Iteration count (always 1).
    pub iteration_count: u32,
    /// NULL bitmap, new-params-bound flag, types and values, as on the wire.
    pub params_raw: Bytes,
}

/// A parameter's wire type: the column type and the unsigned bit (0x80 in the second byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamType {
    /// Column type (`consts::column_type`).
    pub column_type: u8,
    /// Whether the value is unsigned.
    pub unsigned: bool,
}

/// A decoded COM_STMT_EXECUTE parameter block.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteParams {
    /// Whether types were sent with this execution (new-params-bound flag).
    pub new_params_bound: bool,
    /// Parameter types (sent now, or the ones bound by an earlier execution).
    pub types: Vec<ParamType>,
    /// Values; NULL comes from the null bitmap.
    pub values: Vec<Value>,
}

impl StmtExecute {
    /// Decodes the parameter block for a statement with `num_params` parameters; `previous_types`
    /// are those bound by the last execution, needed when the client does not resend them.
    pub fn params(
        &self,
        num_params: usize,
        previous_types: Option<&[ParamType]>,
    ) -> Result<ExecuteParams> {
        let mut r = Reader::new(self.params_raw.clone());
        if num_params == 0 {
            return Ok(ExecuteParams {
                new_params_bound: false,
                types: Vec::new(),
                values: Vec::new(),
            });
        }
        let bitmap = r.bytes(num_params.div_ceil(8), "param null bitmap")?;
        let new_params_bound = r.u8("new params bound flag")? == 1;
        let types = if new_params_bound {
            let mut types = Vec::with_capacity(num_params);
            for _ in 0..num_params {
                let t = r.u8("param type")?;
                let f = r.u8("param flags")?;
                types.push(ParamType {
                    column_type: t,
                    unsigned: f & 0x80 != 0,
                });
            }
            types
        } else {
            match previous_types {
                Some(t) if t.len() == num_params => t.to_vec(),
                _ => return Err(MysqlError::Params("no parameter types bound")),
            }
        };
        let mut values = Vec::with_capacity(num_params);
        for (i, t) in types.iter().enumerate() {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                values.push(Value::Null);
            } else {
                values.push(value::decode_binary(&mut r, t.column_type, t.unsigned)?);
            }
        }
        r.finish("COM_STMT_EXECUTE parameters")?;
        Ok(ExecuteParams {
            new_params_bound,
            types,
            values,
        })
    }

    /// Builds an execute request binding `params` (types always sent).
    pub fn new(statement_id: u32, params: &[(ParamType, Value)]) -> Result<Self> {
        let mut out = BytesMut::new();
        if !params.is_empty() {
            let start = out.len();
            out.put_bytes(0, params.len().div_ceil(8));
            for (i, (_, v)) in params.iter().enumerate() {
                if matches!(v, Value::Null) {
                    out[start + i / 8] |= 1 << (i % 8);
                }
            }
            out.put_u8(1);
            for (t, _) in params {
                out.put_u8(t.column_type);
                out.put_u8(if t.unsigned { 0x80 } else { 0 });
            }
            for (t, v) in params {
                value::encode_binary(v, t.column_type, &mut out)?;
            }
        }
        Ok(StmtExecute {
            statement_id,
            flags: 0,
            iteration_count: 1,
            params_raw: out.freeze(),
        })
    }
}

impl Command {
    /// Decodes a command-phase payload.
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let code = r.u8("command byte")?;
        let cmd = match code {
            com::QUIT => Command::Quit,
            com::INIT_DB => Command::InitDb(r.rest()),
            com::QUERY => Command::Query(r.rest()),
            com::FIELD_LIST => {
                let table = r.nul_bytes("table")?;
                Command::FieldList {
                    table,
                    wildcard: r.rest(),
                }
            }
            com::STATISTICS => Command::Statistics,
            com::PING => Command::Ping,
            com::CHANGE_USER => {
                let username = r.nul_bytes("user name")?;
                let n = r.u8("auth response length")?;
                let auth_response = r.bytes(usize::from(n), "auth response")?;
                let database = r.nul_or_eof_bytes("database")?;
                let mut cu = ChangeUser {
                    username,
                    auth_response,
                    database,
                    ..Default::default()
                };
                if !r.is_empty() {
                    cu.charset = Some(r.u16("charset")?);
                }
                if !r.is_empty() {
                    cu.auth_plugin_name = Some(r.nul_or_eof_bytes("auth plugin name")?);
                }
                if !r.is_empty() {
                    cu.connect_attrs = Some(decode_attrs(&mut r)?);
                }
                Command::ChangeUser(cu)
            }
            com::STMT_PREPARE => Command::StmtPrepare(r.rest()),
            com::STMT_EXECUTE => Command::StmtExecute(StmtExecute {
                statement_id: r.u32("statement id")?,
                flags: r.u8("cursor flags")?,
                iteration_count: r.u32("iteration count")?,
                params_raw: r.rest(),
            }),
            com::STMT_SEND_LONG_DATA => Command::StmtSendLongData {
                statement_id: r.u32("statement id")?,
                param_id: r.u16("param id")?,
                data: r.rest(),
            },
            com::STMT_CLOSE => Command::StmtClose(r.u32("statement id")?),
            com::STMT_RESET => Command::StmtReset(r.u32("statement id")?),
            com::STMT_FETCH => Command::StmtFetch {
                statement_id: r.u32("statement id")?,
                num_rows: r.u32("row count")?,
            },
            com::RESET_CONNECTION => Command::ResetConnection,
            com::SET_OPTION => Command::SetOption(r.u16("option")?),
            _ => Command::Other {
                code,
                body: r.rest(),
            },
        };
        r.finish("command")?;
        Ok(cmd)
    }

    /// The command byte.
    pub fn code(&self) -> u8 {
        match self {
            Command::Quit => com::QUIT,
            Command::InitDb(_) => com::INIT_DB,
            Command::Query(_) => com::QUERY,
            Command::FieldList { .. } => com::FIELD_LIST,
            Command::Statistics => com::STATISTICS,
            Command::Ping => com::PING,
            Command::ChangeUser(_) => com::CHANGE_USER,
            Command::StmtPrepare(_) => com::STMT_PREPARE,
            Command::StmtExecute(_) => com::STMT_EXECUTE,
            Command::StmtSendLongData { .. } => com::STMT_SEND_LONG_DATA,
            Command::StmtClose(_) => com::STMT_CLOSE,
            Command::StmtReset(_) => com::STMT_RESET,
            Command::StmtFetch { .. } => com::STMT_FETCH,
            Command::ResetConnection => com::RESET_CONNECTION,
            Command::SetOption(_) => com::SET_OPTION,
            Command::Other { code, .. } => *code,
        }
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.code());
        match self {
            Command::Quit | Command::Statistics | Command::Ping | Command::ResetConnection => {}
            Command::InitDb(b) | Command::Query(b) | Command::StmtPrepare(b) => out.put_slice(b),
            Command::FieldList { table, wildcard } => {
                put_nul_bytes(out, table);
                out.put_slice(wildcard);
            }
            Command::ChangeUser(cu) => {
                put_nul_bytes(out, &cu.username);
                let n = cu.auth_response.len().min(255);
                out.put_u8(n as u8);
                out.put_slice(&cu.auth_response[..n]);
                put_nul_bytes(out, &cu.database);
                if let Some(cs) = cu.charset {
                    out.put_u16_le(cs);
                    if let Some(p) = &cu.auth_plugin_name {
                        put_nul_bytes(out, p);
                        if let Some(attrs) = &cu.connect_attrs {
                            encode_attrs(attrs, out);
                        }
                    }
                }
            }
            Command::StmtExecute(e) => {
                out.put_u32_le(e.statement_id);
                out.put_u8(e.flags);
                out.put_u32_le(e.iteration_count);
                out.put_slice(&e.params_raw);
            }
            Command::StmtSendLongData {
                statement_id,
                param_id,
                data,
            } => {
                out.put_u32_le(*statement_id);
                out.put_u16_le(*param_id);
                out.put_slice(data);
            }
            Command::StmtClose(id) | Command::StmtReset(id) => out.put_u32_le(*id),
            Command::StmtFetch {
                statement_id,
                num_rows,
            } => {
                out.put_u32_le(*statement_id);
                out.put_u32_le(*num_rows);
            }
            Command::SetOption(o) => out.put_u16_le(*o),
            Command::Other { body, .. } => out.put_slice(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::consts::column_type as ty;

    #[test]
    fn query_and_ping_exact() {
        let mut out = BytesMut::new();
        Command::Query(Bytes::from_static(b"SELECT 1")).encode(&mut out);
        assert_eq!(&out[..], b"\x03SELECT 1");
        assert_eq!(
            Command::decode(out.freeze()).unwrap(),
            Command::Query(Bytes::from_static(b"SELECT 1"))
        );
        assert_eq!(
            Command::decode(Bytes::from_static(&[0x0E])).unwrap(),
            Command::Ping
        );
        assert!(Command::decode(Bytes::from_static(&[0x0E, 0])).is_err());
        assert!(Command::decode(Bytes::new()).is_err());
    }

    #[test]
    fn execute_params_round_trip() {
        let params = [
            (
                ParamType {
                    column_type: ty::LONGLONG,
                    unsigned: false,
                },
                Value::Int(-7),
            ),
            (
                ParamType {
                    column_type: ty::VAR_STRING,
                    unsigned: false,
                },
                Value::Null,
            ),
            (
                ParamType {
                    column_type: ty::VAR_STRING,
                    unsigned: false,
                },
                Value::Bytes(Bytes::from_static(b"hi")),
            ),
        ];
        let e = StmtExecute::new(5, &params).unwrap();
        let mut out = BytesMut::new();
        Command::StmtExecute(e.clone()).encode(&mut out);
        assert_eq!(&out[..10], &[0x17, 5, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(out[10], 0b010); // null bitmap
        assert_eq!(out[11], 1); // new params bound
        let Command::StmtExecute(back) = Command::decode(out.freeze()).unwrap() else {
            panic!("not execute")
        };
        let p = back.params(3, None).unwrap();
        assert!(p.new_params_bound);
        assert_eq!(
            p.values,
            params.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()
        );
        assert!(back.params(4, None).is_err());
    }
}
