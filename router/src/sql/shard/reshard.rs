//! Online resharding of one sharded table: the pure parts (docs/sharding.md, "Resharding").
//!
//! A reshard moves a table from an *old layout* (its rule, physical tables and shards) to a *new
//! layout*: more partitions, another algorithm, or the same partitions on other servers. This
//! module decides what moves where ([`plan`]), cuts the copy and the verification into primary-key
//! ranges ([`chunks`]), writes the SQL the copier and the verifier send ([`read_chunk_sql`],
//! [`insert_ignore_sql`], [`checksum_sql`]), routes copied rows to their new partitions
//! ([`route_rows`]), compares checksums ([`compare`]) and keeps the job's phases ([`Phase`]).
//! Nothing here talks to a server.

use std::fmt::Write as _;

use super::{Algorithm, KeyValue, RuleError, Shard, TableRule};
use crate::sql::plan::splice::quote_ident;

/// One side of a reshard: a table rule and the shards its partitions are spread over.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    /// The rule (partitions, algorithm, physical names).
    pub rule: &'a TableRule,
    /// The shards, in the order the rule's partition blocks refer to.
    pub shards: &'a [Shard],
}

impl Layout<'_> {
    /// The shard and physical table of partition `p`.
    pub fn place(&self, p: usize) -> (&Shard, &str) {
        let s = self
            .rule
            .shard_of(p)
            .min(self.shards.len().saturating_sub(1));
        (&self.shards[s], &self.rule.physical[p])
    }
}

/// Checks that `new` can receive `old`'s rows: the same shard-key column, and no physical table
/// of the new layout that is one of the old layout's (same group, schema and name): the old
/// layout stays readable until the reshard is confirmed, so the copy must never write into it.
pub fn check(old: Layout<'_>, new: Layout<'_>) -> Result<(), RuleError> {
    if old.shards.is_empty() || new.shards.is_empty() {
        return Err(RuleError::Config("both layouts need shards".into()));
    }
    if old.rule.key != new.rule.key {
        return Err(RuleError::Config(format!(
            "table `{}`: the new rule's key `{}` is not the old rule's `{}` (the key of a row is how both layouts find it)",
            old.rule.name, new.rule.key, old.rule.key
        )));
    }
    for q in 0..new.rule.partitions() {
        let (ns, nt) = new.place(q);
        for p in 0..old.rule.partitions() {
            let (os, ot) = old.place(p);
            if ns.group == os.group
                && ns.schema.eq_ignore_ascii_case(&os.schema)
                && nt.eq_ignore_ascii_case(ot)
            {
                return Err(RuleError::Config(format!(
                    "new partition {q} (`{}`.`{nt}` on group `{}`) is old partition {p}'s table; the new layout needs tables of its own (e.g. physical = \"{}_v2_{{..}}\")",
                    ns.schema, ns.group, old.rule.name
                )));
            }
        }
    }
    Ok(())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The half-open interval `[lo, hi)` of range partition `p` (`None`: unbounded on that side).
fn range_of(boundaries: &[i128], p: usize) -> (Option<i128>, Option<i128>) {
    let lo = p.checked_sub(1).and_then(|i| boundaries.get(i)).copied();
    (lo, boundaries.get(p).copied())
}

/// The new partitions that rows of old partition `p` can land in. Exact for hash → hash (a key
/// with `h ≡ p (mod n)` has `h mod m ≡ p (mod gcd(n, m))`), range → range (overlapping
/// intervals), date → date of the same unit and an unchanged algorithm; every new partition
/// otherwise (each row is routed on its own when copied).
pub fn targets(old: &TableRule, new: &TableRule, p: usize) -> Vec<usize> {
    let (n, m) = (old.partitions(), new.partitions());
    match (&old.algorithm, &new.algorithm) {
        _ if old.algorithm == new.algorithm && n == m => vec![p],
        (Algorithm::Hash, Algorithm::Hash) => {
            let g = gcd(n, m).max(1);
            (0..m).filter(|q| q % g == p % g).collect()
        }
        (Algorithm::Range { boundaries: a }, Algorithm::Range { boundaries: b }) => {
            let (lo, hi) = range_of(a, p);
            (0..m)
                .filter(|&q| {
                    let (qlo, qhi) = range_of(b, q);
                    // [lo, hi) and [qlo, qhi) overlap.
                    let below = matches!((hi, qlo), (Some(h), Some(l)) if h <= l);
                    let above = matches!((qhi, lo), (Some(h), Some(l)) if h <= l);
                    !below && !above
                })
                .collect()
        }
        (
            Algorithm::Date {
                unit: u1,
                start: s1,
            },
            Algorithm::Date {
                unit: u2,
                start: s2,
            },
        ) if u1 == u2 => {
            let idx = s1 + p as i64 - s2;
            if idx >= 0 && (idx as usize) < m {
                vec![idx as usize]
            } else {
                Vec::new()
            }
        }
        _ => (0..m).collect(),
    }
}

/// Size of one old partition (from `information_schema.TABLES`: estimates for InnoDB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartStats {
    /// Rows (estimated).
    pub rows: u64,
    /// Data bytes.
    pub bytes: u64,
}

/// The rows of one old partition and where they go.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanMove {
    /// Old partition.
    pub from: usize,
    /// New partitions that may receive its rows (empty: none fits the new rule).
    pub to: Vec<usize>,
    /// Its size.
    pub stats: PartStats,
}

/// What a reshard will do (the dry run prints [`Plan::render`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Logical table.
    pub table: String,
    /// One entry per old partition.
    pub moves: Vec<PlanMove>,
    /// `(shard, schema, physical)` of each old partition.
    pub old_places: Vec<(String, String, String)>,
    /// `(shard, schema, physical)` of each new partition.
    pub new_places: Vec<(String, String, String)>,
    /// Copy rate the time estimate assumes (bytes/s).
    pub bytes_per_sec: u64,
}

impl Plan {
    /// Rows and bytes to copy.
    pub fn totals(&self) -> PartStats {
        self.moves
            .iter()
            .fold(PartStats::default(), |a, m| PartStats {
                rows: a.rows + m.stats.rows,
                bytes: a.bytes + m.stats.bytes,
            })
    }

    /// Estimated copy time in seconds at [`Plan::bytes_per_sec`].
    pub fn estimated_secs(&self) -> f64 {
        self.totals().bytes as f64 / self.bytes_per_sec.max(1) as f64
    }

    /// Old partitions none of whose rows fit the new rule (a reshard would refuse them).
    pub fn unplaceable(&self) -> Vec<usize> {
        self.moves
            .iter()
            .filter(|m| m.to.is_empty() && m.stats.rows > 0)
            .map(|m| m.from)
            .collect()
    }

    /// The dry run's text: one line per old partition (where it is, its size, where its rows
    /// go), then the totals and the estimated time.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "reshard plan for `{}`: {} -> {} partitions",
            self.table,
            self.old_places.len(),
            self.new_places.len()
        );
        let place = |(sh, schema, t): &(String, String, String)| format!("{sh}:{schema}.{t}");
        for m in &self.moves {
            let to: Vec<String> = if m.to.len() == self.new_places.len() && m.to.len() > 1 {
                vec!["every new partition (routed per row)".into()]
            } else {
                m.to.iter()
                    .map(|&q| format!("p{q} {}", place(&self.new_places[q])))
                    .collect()
            };
            let _ = writeln!(
                s,
                "  p{} {} ~{} rows ~{} bytes -> {}",
                m.from,
                place(&self.old_places[m.from]),
                m.stats.rows,
                m.stats.bytes,
                if to.is_empty() {
                    "NOWHERE (no new partition holds its keys)".into()
                } else {
                    to.join(", ")
                }
            );
        }
        let t = self.totals();
        let _ = writeln!(
            s,
            "total ~{} rows ~{} bytes; estimated copy {:.1} s at {} bytes/s",
            t.rows,
            t.bytes,
            self.estimated_secs(),
            self.bytes_per_sec
        );
        s
    }
}

/// Plans a reshard from `old` to `new` with each old partition's size in `stats` (one per old
/// partition).
pub fn plan(
    old: Layout<'_>,
    new: Layout<'_>,
    stats: &[PartStats],
    bytes_per_sec: u64,
) -> Result<Plan, RuleError> {
    check(old, new)?;
    if stats.len() != old.rule.partitions() {
        return Err(RuleError::Config(format!(
            "{} partition sizes for {} old partitions",
            stats.len(),
            old.rule.partitions()
        )));
    }
    let places = |l: Layout<'_>| {
        (0..l.rule.partitions())
            .map(|p| {
                let (s, t) = l.place(p);
                (s.name.clone(), s.schema.clone(), t.to_string())
            })
            .collect::<Vec<_>>()
    };
    Ok(Plan {
        table: old.rule.name.clone(),
        moves: (0..old.rule.partitions())
            .map(|p| PlanMove {
                from: p,
                to: targets(old.rule, new.rule, p),
                stats: stats[p],
            })
            .collect(),
        old_places: places(old),
        new_places: places(new),
        bytes_per_sec,
    })
}

/// Half-open primary-key ranges `[lo, hi)` covering `[min, max]`, each expected to hold about
/// `chunk_rows` of the `rows` rows (keys assumed spread evenly; a chunk is never empty of keys).
pub fn chunks(min: i128, max: i128, rows: u64, chunk_rows: u64) -> Vec<(i128, i128)> {
    if max < min {
        return Vec::new();
    }
    let span = max - min + 1;
    let n = i128::from(rows.div_ceil(chunk_rows.max(1)).max(1)).min(span);
    let step = span.div_euclid(n) + i128::from(span.rem_euclid(n) != 0);
    let mut out = Vec::with_capacity(n as usize);
    let mut lo = min;
    while lo <= max {
        let hi = lo.saturating_add(step).min(max.saturating_add(1));
        out.push((lo, hi));
        lo = hi;
    }
    out
}

fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The copier's read of one batch of an old partition, in key order after `after`, as a locking
/// read: run inside a transaction on the old shard that is committed only after the batch is in
/// the new layout, so a client's write to one of these rows (which the proxy dual-writes) waits
/// until the copy of the row is in place (docs/sharding.md, "The copy/dual-write race"). Each
/// column comes back as the hex of its bytes (`HEX(CAST(c AS BINARY))`): exact for any charset
/// and binary data over the text protocol.
pub fn read_chunk_sql(
    table: &str,
    columns: &[String],
    pk: &str,
    after: Option<i128>,
    limit: u64,
) -> String {
    let pkq = quote_ident(pk);
    let cols = columns
        .iter()
        .map(|c| format!("HEX(CAST({} AS BINARY))", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!("SELECT {cols} FROM {}", quote_ident(table));
    if let Some(a) = after {
        let _ = write!(s, " WHERE {pkq} > {a}");
    }
    let _ = write!(s, " ORDER BY {pkq} LIMIT {limit} FOR UPDATE");
    s
}

/// The condition of one piece a repair re-copies: keys `lo <= pk < hi`, or a list of keys.
pub fn piece_condition(pk: &str, range: Option<(i128, i128)>, keys: &[i128]) -> String {
    let pkq = quote_ident(pk);
    match range {
        Some((lo, hi)) => format!("{pkq} >= {lo} AND {pkq} < {hi}"),
        None => {
            let mut list = String::new();
            for (i, k) in keys.iter().enumerate() {
                let _ = write!(list, "{}{k}", if i > 0 { ", " } else { "" });
            }
            if keys.is_empty() {
                list.push_str("NULL");
            }
            format!("{pkq} IN ({list})")
        }
    }
}

/// The repair's locking read of the rows of `table` that match `cond` (as [`read_chunk_sql`]
/// reads them: hex of each column's bytes).
pub fn read_where_sql(table: &str, columns: &[String], pk: &str, cond: &str) -> String {
    let cols = columns
        .iter()
        .map(|c| format!("HEX(CAST({} AS BINARY))", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {cols} FROM {} WHERE {cond} ORDER BY {} FOR UPDATE",
        quote_ident(table),
        quote_ident(pk)
    )
}

/// A copied row: each column's bytes (`None`: NULL).
pub type Row = Vec<Option<Vec<u8>>>;

/// Decodes one cell of [`read_chunk_sql`] (hex text).
pub fn unhex(cell: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    let Some(t) = cell else { return Ok(None) };
    let b = t.as_bytes();
    if b.len() % 2 != 0 {
        return Err(format!("odd hex cell `{t}`"));
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(format!("bad hex cell `{t}`")),
    };
    b.chunks(2)
        .map(|p| Ok(nib(p[0])? << 4 | nib(p[1])?))
        .collect::<Result<Vec<u8>, String>>()
        .map(Some)
}

/// The integer primary key of a copied row (column `pk_index`).
pub fn row_pk(row: &Row, pk_index: usize) -> Result<i128, String> {
    row.get(pk_index)
        .and_then(|c| c.as_deref())
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| t.parse::<i128>().ok())
        .ok_or_else(|| "the primary key of a copied row is not an integer".to_string())
}

/// `INSERT IGNORE` of copied rows: a row the dual writes already put in the new layout is newer
/// than (or as new as) the copy, so the copy never overwrites it. Values are written as
/// `CAST(X'..' AS BINARY)`: the server converts the bytes to the column's type as it would a
/// string (`'12'` into an INT is 12), and a text column gets the bytes unchanged.
pub fn insert_ignore_sql(table: &str, columns: &[String], rows: &[Row]) -> String {
    let mut s = format!(
        "INSERT IGNORE INTO {} ({}) VALUES ",
        quote_ident(table),
        column_list(columns)
    );
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                s.push_str(", ");
            }
            match v {
                None => s.push_str("NULL"),
                Some(b) => {
                    s.push_str("CAST(X'");
                    for byte in b {
                        let _ = write!(s, "{byte:02X}");
                    }
                    s.push_str("' AS BINARY)");
                }
            }
        }
        s.push(')');
    }
    s
}

/// Groups copied rows by their new partition (the shard key is column `key_index`).
pub fn route_rows(
    new: &TableRule,
    key_index: usize,
    rows: Vec<Row>,
) -> Result<Vec<(usize, Vec<Row>)>, RuleError> {
    let mut out: Vec<(usize, Vec<Row>)> = Vec::new();
    for row in rows {
        let key = match row.get(key_index) {
            None => return Err(RuleError::Value(format!("row has no column {key_index}"))),
            Some(None) => KeyValue::Null,
            Some(Some(b)) => KeyValue::from_text(&String::from_utf8_lossy(b)),
        };
        let q = new.algorithm.partition(&key, new.partitions())?;
        match out.iter_mut().find(|(p, _)| *p == q) {
            Some((_, v)) => v.push(row),
            None => out.push((q, vec![row])),
        }
    }
    out.sort_by_key(|(p, _)| *p);
    Ok(out)
}

/// Row count and an order-independent checksum of a set of rows; sets on several tables combine
/// with [`Checksum::add`] (counts add, checksums XOR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    /// Rows.
    pub rows: u64,
    /// XOR of each row's 64-bit digest.
    pub xor: u64,
}

impl Checksum {
    /// Adds a disjoint set of rows.
    pub fn add(&mut self, o: Checksum) {
        self.rows += o.rows;
        self.xor ^= o.xor;
    }

    /// Parses the two cells of [`checksum_sql`]'s row (text protocol).
    pub fn parse(rows: Option<&[u8]>, xor: Option<&[u8]>) -> Result<Self, String> {
        let num = |c: Option<&[u8]>, what: &str| -> Result<u64, String> {
            let t = std::str::from_utf8(c.unwrap_or(b"0")).map_err(|e| e.to_string())?;
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("checksum query returned {what} `{t}`"))
        };
        Ok(Checksum {
            rows: num(rows, "a row count")?,
            xor: num(xor, "a checksum")?,
        })
    }
}

/// The verifier's query for the rows of `table` with `lo <= pk < hi`: `COUNT(*)` and the XOR of
/// each row's digest, the first 64 bits of `MD5` over the columns' `QUOTE`d values (`QUOTE`
/// writes NULL as the bare word `NULL` and any string quoted, so NULL and `'NULL'` differ and no
/// separator inside a value can make two rows collide). Columns must be named in the same order on
/// both layouts.
pub fn checksum_sql(table: &str, columns: &[String], pk: &str, lo: i128, hi: i128) -> String {
    let pkq = quote_ident(pk);
    checksum_where(table, columns, &format!("{pkq} >= {lo} AND {pkq} < {hi}"))
}

/// [`checksum_sql`] over the rows whose key is one of `keys` (the cut-over's re-verify of keys
/// written since the last pass).
pub fn checksum_keys_sql(table: &str, columns: &[String], pk: &str, keys: &[i128]) -> String {
    let mut list = String::with_capacity(keys.len() * 8);
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            list.push_str(", ");
        }
        let _ = write!(list, "{k}");
    }
    if keys.is_empty() {
        list.push_str("NULL");
    }
    checksum_where(table, columns, &format!("{} IN ({list})", quote_ident(pk)))
}

fn checksum_where(table: &str, columns: &[String], cond: &str) -> String {
    let cols = columns
        .iter()
        .map(|c| format!("QUOTE({})", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT COUNT(*), COALESCE(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS(',', {cols})), 16), 16, 10) AS UNSIGNED)), 0) FROM {} WHERE {cond}",
        quote_ident(table)
    )
}

/// A chunk whose old and new checksums differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// The key range `[lo, hi)`.
    pub range: (i128, i128),
    /// Over all old partitions.
    pub old: Checksum,
    /// Over all new partitions.
    pub new: Checksum,
}

/// Compares per-chunk checksums (each the sum over every partition of its layout).
pub fn compare(ranges: &[(i128, i128)], old: &[Checksum], new: &[Checksum]) -> Vec<Mismatch> {
    ranges
        .iter()
        .zip(old.iter().zip(new))
        .filter(|(_, (o, n))| o != n)
        .map(|(r, (o, n))| Mismatch {
            range: *r,
            old: *o,
            new: *n,
        })
        .collect()
}

/// Functions whose value depends on when or where a statement runs: the two writes of a dual
/// write would store different values. Those in the first list count only as calls (`NAME(`);
/// the second are also values without parentheses.
const NONDETERMINISTIC_CALLS: &[&str] = &[
    "NOW",
    "SYSDATE",
    "CURDATE",
    "CURTIME",
    "UNIX_TIMESTAMP",
    "RAND",
    "UUID",
    "UUID_SHORT",
    "SYS_GUID",
    "CONNECTION_ID",
    "LAST_INSERT_ID",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "GET_LOCK",
    "SLEEP",
];
const NONDETERMINISTIC_WORDS: &[&str] = &[
    "CURRENT_TIMESTAMP",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "UTC_TIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
];

/// The first function of `sql` (outside quoted strings and identifiers) whose value depends on
/// when or where it runs (`NOW()`, `RAND()`, `UUID()`, ...): a dual write refuses such a
/// statement, since each layout would get its own value.
pub fn nondeterministic(sql: &str) -> Option<&'static str> {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' && q != b'`' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$')
                {
                    i += 1;
                }
                let word = &sql[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let call = b.get(j) == Some(&b'(');
                let hit = NONDETERMINISTIC_WORDS
                    .iter()
                    .chain(NONDETERMINISTIC_CALLS.iter().filter(|_| call))
                    .find(|f| f.eq_ignore_ascii_case(word));
                if let Some(f) = hit {
                    return Some(f);
                }
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The words and punctuation of `sql` for [`writes_only`]: identifiers unquoted and upper-cased,
/// strings as `'`, comments left out.
fn words(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = sql[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
        } else if (c == b'-' && b.get(i + 1) == Some(&b'-')) || c == b'#' {
            i = sql[i..].find('\n').map_or(b.len(), |e| i + e + 1);
        } else if c == b'\'' || c == b'"' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push("'".into());
        } else if c == b'`' {
            let end = sql[i + 1..].find('`').map_or(b.len(), |e| i + 1 + e);
            out.push(sql[i + 1..end.min(b.len())].to_ascii_uppercase());
            i = end + 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push(sql[start..i].to_ascii_uppercase());
        } else {
            if !c.is_ascii_whitespace() {
                out.push((c as char).to_string());
            }
            i += 1;
        }
    }
    out
}

/// Checks that the INSERT, REPLACE, UPDATE or DELETE `sql` writes `table` and no other table: a
/// dual write applies the whole statement to both layouts, so another table written by it (a
/// multi-table UPDATE or DELETE, `INSERT INTO other ... SELECT ... FROM table`) would get the
/// write twice. `Err`: why not.
pub fn writes_only(sql: &str, table: &str) -> Result<(), String> {
    let w = words(sql);
    let t = table.to_ascii_uppercase();
    let skip = [
        "LOW_PRIORITY",
        "HIGH_PRIORITY",
        "DELAYED",
        "IGNORE",
        "QUICK",
    ];
    // The table named at `i` (`schema.name` or `name`), and the index after it.
    let name_at = |i: usize| -> (Option<&str>, usize) {
        match (w.get(i), w.get(i + 1), w.get(i + 2)) {
            (Some(_), Some(dot), Some(n)) if dot == "." => (Some(n.as_str()), i + 3),
            (Some(n), _, _) => (Some(n.as_str()), i + 1),
            _ => (None, i),
        }
    };
    let multi = || {
        Err(format!(
            "a statement that writes other tables than `{table}` would write them twice (dual write); run it after the reshard"
        ))
    };
    let first = w.first().map(String::as_str).unwrap_or("");
    let mut i = 1;
    while w.get(i).is_some_and(|x| skip.contains(&x.as_str())) {
        i += 1;
    }
    let target = match first {
        "INSERT" | "REPLACE" => {
            if w.get(i).is_some_and(|x| x == "INTO") {
                i += 1;
            }
            name_at(i).0
        }
        "UPDATE" => {
            let (n, after) = name_at(i);
            // `UPDATE a, b SET ...`, `UPDATE a JOIN b ...`: several tables.
            let set = w
                .iter()
                .skip(after)
                .position(|x| x == "SET")
                .map_or(w.len(), |p| p + after);
            if w[after..set].iter().any(|x| x == "," || x == "JOIN") {
                return multi();
            }
            n
        }
        "DELETE" => {
            // `DELETE a FROM ...`, `DELETE FROM a USING ...`, joins: several tables.
            if w.get(i).is_some_and(|x| x != "FROM") {
                return multi();
            }
            let (n, after) = name_at(i + 1);
            let end = w
                .iter()
                .skip(after)
                .position(|x| x == "WHERE" || x == "ORDER" || x == "LIMIT")
                .map_or(w.len(), |p| p + after);
            if w[after..end]
                .iter()
                .any(|x| x == "," || x == "JOIN" || x == "USING")
            {
                return multi();
            }
            n
        }
        _ => return Err("not an INSERT, REPLACE, UPDATE or DELETE".into()),
    };
    match target {
        Some(n) if n == t => Ok(()),
        _ => multi(),
    }
}

/// The phases of a reshard job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Dual writes on, existing rows being copied.
    Copying,
    /// Copy paused by the operator (dual writes stay on).
    Paused,
    /// Chunk checksums being compared.
    Verifying,
    /// Writes paused while the last checks run and the rule switches.
    CuttingOver,
    /// The new layout serves; the old one is kept readable (and dual-written) for rollback.
    CutOver,
    /// The operator confirmed: the old layout is no longer written.
    Confirmed,
    /// Stopped; the old layout serves as before (the new tables are left for inspection).
    Aborted,
}

/// An operator's command on a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop copying after the current batch.
    Pause,
    /// Go on copying.
    Resume,
    /// Give up (before confirmation: back to the old layout).
    Abort,
    /// Drop the old layout from the write path.
    Confirm,
}

impl Phase {
    /// The phase after `cmd`, or why the command does not apply now.
    pub fn apply(self, cmd: Command) -> Result<Phase, String> {
        use Phase::*;
        match (self, cmd) {
            (Copying | Verifying, Command::Pause) => Ok(Paused),
            (Paused, Command::Resume) => Ok(Copying),
            (Copying | Paused | Verifying | CuttingOver | CutOver, Command::Abort) => Ok(Aborted),
            (CutOver, Command::Confirm) => Ok(Confirmed),
            (p, c) => Err(format!("cannot {c:?} a reshard that is {p:?}")),
        }
    }

    /// Whether client writes go to both layouts in this phase.
    pub fn dual_writes(self) -> bool {
        matches!(
            self,
            Phase::Copying | Phase::Paused | Phase::Verifying | Phase::CuttingOver | Phase::CutOver
        )
    }

    /// Whether the new layout is the one reads and the first write go to.
    pub fn new_serves(self) -> bool {
        matches!(self, Phase::CutOver | Phase::Confirmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShardTable;
    use crate::sql::shard::compile_table;

    fn shards(n: usize, group: &str) -> Vec<Shard> {
        (0..n)
            .map(|i| Shard {
                name: format!("s{i}"),
                group: group.into(),
                schema: format!("app_{i}"),
            })
            .collect()
    }

    fn rule(alg: &str, physical: &str, shards: usize, boundaries: &[&str]) -> TableRule {
        let t = ShardTable {
            name: "orders".into(),
            key: "user_id".into(),
            algorithm: alg.into(),
            physical: Some(physical.into()),
            boundaries: boundaries.iter().map(|b| b.to_string()).collect(),
            lists: Vec::new(),
            unit: None,
            start: None,
            partitions: None,
            gene_keys: Vec::new(),
            auto_id: None,
            reshard_to: None,
            reshard_phase: None,
            span: 0..0,
        };
        compile_table(&t, shards).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn hash_four_to_eight_splits_each_partition_in_two() {
        let old = rule("hash", "orders_{0..3}", 2, &[]);
        let new = rule("hash", "orders_v2_{0..7}", 2, &[]);
        for p in 0..4 {
            assert_eq!(targets(&old, &new, p), vec![p, p + 4]);
        }
        // Every key lands in one of the targets of its old partition.
        for k in -1000i128..1000 {
            let kv = KeyValue::Int(k);
            let p = old.algorithm.partition(&kv, 4).unwrap_or(99);
            let q = new.algorithm.partition(&kv, 8).unwrap_or(99);
            assert!(targets(&old, &new, p).contains(&q), "key {k}: {p} -> {q}");
        }
        // Strings too (FNV mod n).
        for i in 0..500 {
            let kv = KeyValue::Str(format!("user-{i}"));
            let p = old.algorithm.partition(&kv, 4).unwrap_or(99);
            let q = new.algorithm.partition(&kv, 8).unwrap_or(99);
            assert!(targets(&old, &new, p).contains(&q));
        }
        // 4 -> 6: gcd 2.
        let six = rule("hash", "orders_v2_{0..5}", 3, &[]);
        assert_eq!(targets(&old, &six, 1), vec![1, 3, 5]);
        for k in 0i128..600 {
            let kv = KeyValue::Int(k);
            let p = old.algorithm.partition(&kv, 4).unwrap_or(99);
            let q = six.algorithm.partition(&kv, 6).unwrap_or(99);
            assert!(targets(&old, &six, p).contains(&q));
        }
    }

    #[test]
    fn range_targets_are_overlapping_intervals() {
        let old = rule("range", "orders_{0..2}", 1, &["100", "200"]);
        let new = rule("range", "o2_{0..3}", 2, &["50", "100", "150"]);
        assert_eq!(targets(&old, &new, 0), vec![0, 1]);
        assert_eq!(targets(&old, &new, 1), vec![2, 3]);
        assert_eq!(targets(&old, &new, 2), vec![3]);
        for k in -50i128..300 {
            let kv = KeyValue::Int(k);
            let p = old.algorithm.partition(&kv, 3).unwrap_or(99);
            let q = new.algorithm.partition(&kv, 4).unwrap_or(99);
            assert!(targets(&old, &new, p).contains(&q), "key {k}");
        }
        // Hash -> range: every partition, decided per row.
        let h = rule("hash", "orders_{0..2}", 1, &[]);
        assert_eq!(targets(&h, &new, 0), vec![0, 1, 2, 3]);
        // Same rule on other servers: one to one.
        let moved = rule("range", "orders_new_{0..2}", 3, &["100", "200"]);
        assert_eq!(targets(&old, &moved, 2), vec![2]);
    }

    #[test]
    fn check_refuses_shared_tables_and_another_key() {
        let s2 = shards(2, "g");
        let old = rule("hash", "orders_{0..3}", 2, &[]);
        let same = rule("hash", "orders_{0..7}", 2, &[]);
        let e = check(
            Layout {
                rule: &old,
                shards: &s2,
            },
            Layout {
                rule: &same,
                shards: &s2,
            },
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("tables of its own"), "{e}");
        // The same names on another group are other tables.
        let other = shards(2, "h");
        assert!(
            check(
                Layout {
                    rule: &old,
                    shards: &s2
                },
                Layout {
                    rule: &same,
                    shards: &other
                },
            )
            .is_ok()
        );
        let mut k = rule("hash", "o2_{0..7}", 2, &[]);
        k.key = "id".into();
        assert!(
            check(
                Layout {
                    rule: &old,
                    shards: &s2
                },
                Layout {
                    rule: &k,
                    shards: &s2
                },
            )
            .is_err()
        );
    }

    #[test]
    fn dry_run_text() {
        let s2 = shards(2, "g");
        let s4 = shards(4, "g");
        let old = rule("hash", "orders_{0..3}", 2, &[]);
        let new = rule("hash", "orders_v2_{0..7}", 4, &[]);
        let stats: Vec<PartStats> = (0..4)
            .map(|i| PartStats {
                rows: 1000 + i,
                bytes: 64_000,
            })
            .collect();
        let p = plan(
            Layout {
                rule: &old,
                shards: &s2,
            },
            Layout {
                rule: &new,
                shards: &s4,
            },
            &stats,
            32_000,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            p.totals(),
            PartStats {
                rows: 4006,
                bytes: 256_000
            }
        );
        assert!((p.estimated_secs() - 8.0).abs() < 1e-9);
        let text = p.render();
        assert!(text.contains("4 -> 8 partitions"), "{text}");
        assert!(
            text.contains("p1 s0:app_0.orders_1 ~1001 rows ~64000 bytes -> p1 s0:app_0.orders_v2_1, p5 s2:app_2.orders_v2_5"),
            "{text}"
        );
        assert!(text.contains("estimated copy 8.0 s"), "{text}");
        assert!(p.unplaceable().is_empty());
        assert!(
            plan(
                Layout {
                    rule: &old,
                    shards: &s2
                },
                Layout {
                    rule: &new,
                    shards: &s4
                },
                &stats[..3],
                1,
            )
            .is_err()
        );
    }

    #[test]
    fn chunks_cover_the_key_range_exactly() {
        for (min, max, rows, per) in [
            (1i128, 1000i128, 1000u64, 100u64),
            (1, 1000, 1000, 7),
            (-5, 5, 3, 1),
            (10, 10, 1, 100),
            (0, 3, 1000, 1),
            (1, 10_000_000_000, 5, 2),
        ] {
            let c = chunks(min, max, rows, per);
            assert_eq!(c.first().map(|c| c.0), Some(min));
            assert_eq!(c.last().map(|c| c.1), Some(max + 1));
            assert!(c.windows(2).all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1));
            assert!(c.len() as u64 <= rows.div_ceil(per).max(1));
        }
        assert_eq!(
            chunks(1, 1000, 1000, 250),
            vec![(1, 251), (251, 501), (501, 751), (751, 1001)]
        );
        assert!(chunks(5, 4, 0, 10).is_empty());
    }

    #[test]
    fn sql_text() {
        let cols: Vec<String> = vec!["id".into(), "user_id".into(), "no`te".into()];
        assert_eq!(
            read_chunk_sql("orders_1", &cols, "id", Some(41), 500),
            "SELECT HEX(CAST(`id` AS BINARY)), HEX(CAST(`user_id` AS BINARY)), HEX(CAST(`no``te` AS BINARY)) FROM `orders_1` WHERE `id` > 41 ORDER BY `id` LIMIT 500 FOR UPDATE"
        );
        assert_eq!(
            read_chunk_sql("t", &cols[..1], "id", None, 2),
            "SELECT HEX(CAST(`id` AS BINARY)) FROM `t` ORDER BY `id` LIMIT 2 FOR UPDATE"
        );
        let rows: Vec<Row> = vec![
            vec![Some(b"1".to_vec()), None, Some(b"it's".to_vec())],
            vec![
                Some(b"2".to_vec()),
                Some(b"-3".to_vec()),
                Some(vec![0xff, 0x00]),
            ],
        ];
        assert_eq!(
            insert_ignore_sql("o", &cols, &rows),
            "INSERT IGNORE INTO `o` (`id`, `user_id`, `no``te`) VALUES (CAST(X'31' AS BINARY), NULL, CAST(X'69742773' AS BINARY)), (CAST(X'32' AS BINARY), CAST(X'2D33' AS BINARY), CAST(X'FF00' AS BINARY))"
        );
        assert_eq!(
            checksum_sql("o", &cols[..2], "id", -1, 10),
            "SELECT COUNT(*), COALESCE(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS(',', QUOTE(`id`), QUOTE(`user_id`))), 16), 16, 10) AS UNSIGNED)), 0) FROM `o` WHERE `id` >= -1 AND `id` < 10"
        );
        assert_eq!(unhex(Some("2D33ff")), Ok(Some(vec![0x2d, 0x33, 0xff])));
        assert_eq!(unhex(None), Ok(None));
        assert!(unhex(Some("ABC")).is_err() && unhex(Some("GG")).is_err());
        assert_eq!(row_pk(&rows[1], 1), Ok(-3));
        assert!(row_pk(&rows[0], 1).is_err() && row_pk(&rows[1], 2).is_err());
    }

    #[test]
    fn rows_route_to_new_partitions() {
        let new = rule("hash", "o_{0..7}", 2, &[]);
        let rows: Vec<Row> = (0..20)
            .map(|i: i64| {
                vec![
                    Some(i.to_string().into_bytes()),
                    Some((i * 3).to_string().into_bytes()),
                ]
            })
            .collect();
        let r = route_rows(&new, 1, rows).unwrap_or_default();
        assert_eq!(r.iter().map(|(_, v)| v.len()).sum::<usize>(), 20);
        for (q, rows) in &r {
            for row in rows {
                let k = row_pk(row, 1).unwrap_or(-1);
                assert_eq!(k.rem_euclid(8) as usize, *q);
            }
        }
        let range = rule("range", "o_{0..1}", 1, &["10"]);
        assert!(route_rows(&range, 5, vec![vec![Some(b"1".to_vec())]]).is_err());
    }

    #[test]
    fn checksums_combine_and_compare() {
        let mut a = Checksum::default();
        a.add(Checksum {
            rows: 2,
            xor: 0b1010,
        });
        a.add(Checksum {
            rows: 3,
            xor: 0b0110,
        });
        assert_eq!(
            a,
            Checksum {
                rows: 5,
                xor: 0b1100
            }
        );
        assert_eq!(
            Checksum::parse(Some(b"7"), Some(b"18446744073709551615")),
            Ok(Checksum {
                rows: 7,
                xor: u64::MAX
            })
        );
        assert!(Checksum::parse(Some(b"x"), None).is_err());
        let ranges = [(0, 10), (10, 20)];
        let old = [a, a];
        let new = [a, Checksum { rows: 5, xor: 1 }];
        let m = compare(&ranges, &old, &new);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].range, (10, 20));
    }

    #[test]
    fn phases() {
        use Command::*;
        let p = Phase::Copying;
        assert_eq!(p.apply(Pause), Ok(Phase::Paused));
        assert_eq!(Phase::Paused.apply(Resume), Ok(Phase::Copying));
        assert!(Phase::Copying.apply(Confirm).is_err());
        assert_eq!(Phase::CutOver.apply(Confirm), Ok(Phase::Confirmed));
        assert_eq!(Phase::CutOver.apply(Abort), Ok(Phase::Aborted));
        assert!(Phase::Confirmed.apply(Abort).is_err());
        assert!(Phase::CutOver.dual_writes() && Phase::CutOver.new_serves());
        assert!(!Phase::Confirmed.dual_writes() && !Phase::Copying.new_serves());
    }
    #[test]
    fn nondeterministic_functions() {
        assert_eq!(
            nondeterministic("UPDATE t SET d = now() WHERE id = 1"),
            Some("NOW")
        );
        assert_eq!(
            nondeterministic("insert into t values (1, RAND ())"),
            Some("RAND")
        );
        assert_eq!(
            nondeterministic("INSERT INTO t VALUES (1, CURRENT_TIMESTAMP)"),
            Some("CURRENT_TIMESTAMP")
        );
        assert_eq!(
            nondeterministic("INSERT INTO t VALUES (uuid())"),
            Some("UUID")
        );
        // Inside strings and quoted identifiers, or as a plain column name: not a call.
        assert_eq!(
            nondeterministic("UPDATE t SET note = 'now() it\\'s rand()' WHERE id = 2"),
            None
        );
        assert_eq!(
            nondeterministic("UPDATE t SET `now()` = 1, now = 2, rand_x = 3"),
            None
        );
        assert_eq!(
            nondeterministic("INSERT INTO t (id, note) VALUES (1, \"uuid()\")"),
            None
        );
        assert_eq!(nondeterministic("DELETE FROM t WHERE id = 1"), None);
    }
    #[test]
    fn writes_only_the_resharding_table() {
        for ok in [
            "INSERT INTO orders (id, user_id) VALUES (1, 2)",
            "insert ignore into `app`.`orders` (id) values (1)",
            "REPLACE orders (id) VALUES (1)",
            "UPDATE orders SET note = 'a, b JOIN c' WHERE user_id = 1",
            "UPDATE /* c, d */ LOW_PRIORITY orders SET n = 1",
            "DELETE FROM orders WHERE user_id = 3 AND id IN (SELECT id FROM x)",
            "INSERT INTO orders (id, user_id) SELECT id, user_id FROM orders WHERE user_id = 1",
        ] {
            assert_eq!(writes_only(ok, "orders"), Ok(()), "{ok}");
        }
        for bad in [
            "INSERT INTO archive (id) SELECT id FROM orders WHERE user_id = 1",
            "UPDATE orders o JOIN users u ON o.user_id = u.id SET u.n = 1",
            "UPDATE orders, users SET users.n = 1 WHERE orders.user_id = users.id",
            "DELETE o, u FROM orders o JOIN users u ON o.user_id = u.id",
            "DELETE FROM orders USING orders JOIN users",
            "UPDATE users SET n = 1 WHERE id IN (SELECT user_id FROM orders)",
        ] {
            let e = writes_only(bad, "orders").err().unwrap_or_default();
            assert!(e.contains("would write them twice"), "{bad}: {e}");
        }
    }
}
