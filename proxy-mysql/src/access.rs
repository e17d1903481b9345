//! A user's schema limits: whether a schema, or every schema a statement names, is one the user may
//! use. Shared by the read/write-split session and the sharded listeners.

use codec::mysql::ErrPacket;
use router::config::User;

use crate::error::errs;

/// For a user limited to some `schemas`: the ERR for a statement that names another schema (every
/// table reference, `USE` in a multi-statement, dynamic SQL), or that cannot be analysed well
/// enough to tell. None: it may run. Shared by the read/write-split and the sharded listeners.
pub fn outside_schemas(
    snap: &runtime::Snapshot,
    user: &str,
    peer: std::net::IpAddr,
    sql: &str,
) -> Option<ErrPacket> {
    let u = snap.config.users.iter().find(|u| u.name == user)?;
    if u.schemas.is_empty() || u.schemas.iter().any(|s| s == "*") {
        return None;
    }
    let allowed = |db: &str| schema_allowed(u, db);
    match router::sql::policy::schemas_outside(sql, &allowed) {
        Ok(out) => out
            .into_iter()
            .next()
            .map(|db| errs::db_access_denied(user, &peer.to_string(), &db)),
        Err(why) => Some(errs::schemas_unchecked(user, &why.to_string())),
    }
}

/// Whether `u` may use schema `db`. The system schemas (information_schema, mysql,
/// performance_schema, sys) need an explicit grant like any other: they describe every schema.
pub fn schema_allowed(u: &User, db: &str) -> bool {
    u.schemas.is_empty() || u.schemas.iter().any(|s| s == db || s == "*")
}
