//! Online resharding: the copier and the verifier over backend connections. The pure parts (plan,
//! chunks, SQL text, routing of rows, checksums) are `router::sql::shard::reshard`; the design and
//! the copy/dual-write race are in docs/sharding.md ("Resharding").

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use router::config::BackendTls;
use router::sql::shard::TableRule;
use router::sql::shard::dirty::Dirty;
use router::sql::shard::reshard::{
    Checksum, Mismatch, Row, checksum_keys_sql, checksum_sql, chunks, compare, insert_ignore_sql,
    piece_condition, read_chunk_sql, read_where_sql, route_rows, row_pk, unhex,
};

use crate::backend::BackendConn;

/// One physical table and a connection to its server, in its schema.
pub struct Table {
    /// The connection (default schema: the table's).
    pub conn: BackendConn,
    /// Physical table name.
    pub table: String,
}

type TextRows = Vec<Vec<Option<String>>>;

impl Table {
    /// Connects to `address` as `user` and selects `schema`.
    pub async fn open(
        address: &str,
        user: &str,
        password: &str,
        schema: &str,
        table: &str,
    ) -> Result<Table, String> {
        Self::open_tls(address, user, password, None, schema, table).await
    }

    /// [`Table::open`] with the group's TLS settings.
    pub async fn open_tls(
        address: &str,
        user: &str,
        password: &str,
        tls: Option<&BackendTls>,
        schema: &str,
        table: &str,
    ) -> Result<Table, String> {
        let conn = BackendConn::connect(
            Rc::from(address),
            Rc::from(address),
            user,
            password,
            Duration::from_secs(5),
            tls,
        )
        .await
        .map_err(|e| e.into_reason())?;
        let mut t = Table {
            conn,
            table: table.to_string(),
        };
        t.query(&format!("USE `{}`", schema.replace('`', "``")))
            .await?;
        Ok(t)
    }

    /// Runs `sql`; the server's error or a lost connection as text.
    pub async fn query(&mut self, sql: &str) -> Result<TextRows, String> {
        self.conn
            .query_rows(sql)
            .await
            .map(|(_, rows)| rows)
            .map_err(|e| format!("`{}`: {}", self.table, e.into_reason()))
    }

    /// The table's columns in order and its primary key's index among them. The key must be one
    /// integer column: the copy and the checksums walk key ranges.
    pub async fn columns(&mut self) -> Result<(Vec<String>, usize), String> {
        let sql = format!(
            "SELECT COLUMN_NAME, COLUMN_KEY, DATA_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{}' ORDER BY ORDINAL_POSITION",
            self.table.replace('\\', "\\\\").replace('\'', "''")
        );
        let rows = self.query(&sql).await?;
        if rows.is_empty() {
            return Err(format!("table `{}` does not exist", self.table));
        }
        let cell =
            |r: &Vec<Option<String>>, i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let names: Vec<String> = rows.iter().map(|r| cell(r, 0)).collect();
        let pk: Vec<usize> = (0..rows.len())
            .filter(|&i| cell(&rows[i], 1) == "PRI")
            .collect();
        let integer = ["tinyint", "smallint", "mediumint", "int", "bigint"];
        match pk.as_slice() {
            [i] if integer.contains(&cell(&rows[*i], 2).as_str()) => Ok((names, *i)),
            _ => Err(format!(
                "table `{}`: resharding needs a primary key of one integer column",
                self.table
            )),
        }
    }
}

/// Estimated rows and data bytes of the table (`information_schema.TABLES`).
pub async fn table_stats(t: &mut Table) -> Result<(u64, u64), String> {
    let sql = format!(
        "SELECT TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{}'",
        t.table.replace('\\', "\\\\").replace('\'', "''")
    );
    let r = t.query(&sql).await?;
    let row = r
        .first()
        .ok_or_else(|| format!("table `{}` does not exist", t.table))?;
    let num = |i: usize| {
        row.get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((num(0), num(1)))
}

/// What one copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Rows read from the old partition.
    pub rows: u64,
    /// Batches (one transaction on the old shard each).
    pub batches: u64,
    /// The last key copied: where a resumed copy starts.
    pub after: Option<i128>,
}

/// Copies the rows of one old partition (`src`) with keys after `after` into the new layout
/// (`targets`, indexed by new partition), `batch` rows per transaction, until the partition is
/// done or `stop` is set (checked between batches). Each batch is a locking read on the old
/// shard, committed only after its rows are in the new layout (`INSERT IGNORE`): a client write
/// to a row of the batch, dual-written by the proxy inside its own transaction on the old shard,
/// either finished before the read (and its new-layout write is older than the copy, which then
/// reads its result) or waits for the commit (and then applies to the copied row).
#[allow(clippy::too_many_arguments)]
pub async fn copy_partition(
    src: &mut Table,
    targets: &mut [Table],
    new: &TableRule,
    columns: &[String],
    pk_index: usize,
    key_index: usize,
    batch: u64,
    after: Option<i128>,
    stop: &AtomicBool,
) -> Result<CopyStats, String> {
    copy_partition_with(
        src,
        targets,
        new,
        columns,
        pk_index,
        key_index,
        batch,
        after,
        stop,
        &mut |_| {},
    )
    .await
}

/// [`copy_partition`] calling `on_batch` with the totals so far after each committed batch (the
/// reshard job's progress).
#[allow(clippy::too_many_arguments)]
pub async fn copy_partition_with(
    src: &mut Table,
    targets: &mut [Table],
    new: &TableRule,
    columns: &[String],
    pk_index: usize,
    key_index: usize,
    batch: u64,
    mut after: Option<i128>,
    stop: &AtomicBool,
    on_batch: &mut dyn FnMut(&CopyStats),
) -> Result<CopyStats, String> {
    let pk = &columns[pk_index];
    let mut stats = CopyStats {
        after,
        ..CopyStats::default()
    };
    while !stop.load(Relaxed) {
        src.query("BEGIN").await?;
        let done = copy_batch(
            src, targets, new, columns, pk, pk_index, key_index, batch, after,
        )
        .await;
        match done {
            Ok(None) => {
                src.query("COMMIT").await?;
                break;
            }
            Ok(Some((n, last))) => {
                src.query("COMMIT").await?;
                stats.rows += n;
                stats.batches += 1;
                after = Some(last);
                stats.after = after;
                on_batch(&stats);
            }
            Err(e) => {
                let _ = src.query("ROLLBACK").await;
                return Err(e);
            }
        }
    }
    Ok(stats)
}

/// One batch inside the old shard's transaction: `None` when no row is left.
#[allow(clippy::too_many_arguments)]
async fn copy_batch(
    src: &mut Table,
    targets: &mut [Table],
    new: &TableRule,
    columns: &[String],
    pk: &str,
    pk_index: usize,
    key_index: usize,
    batch: u64,
    after: Option<i128>,
) -> Result<Option<(u64, i128)>, String> {
    let sql = read_chunk_sql(&src.table, columns, pk, after, batch);
    let text = src.query(&sql).await?;
    if text.is_empty() {
        return Ok(None);
    }
    let rows: Vec<Row> = text
        .iter()
        .map(|r| r.iter().map(|c| unhex(c.as_deref())).collect())
        .collect::<Result<_, _>>()?;
    let n = rows.len() as u64;
    let last = rows.last().map(|r| row_pk(r, pk_index)).transpose()?;
    for (q, part) in route_rows(new, key_index, rows).map_err(|e| e.to_string())? {
        let t = targets
            .get_mut(q)
            .ok_or_else(|| format!("no connection for new partition {q}"))?;
        let sql = insert_ignore_sql(&t.table, columns, &part);
        t.query(&sql).await?;
    }
    Ok(last.map(|l| (n, l)))
}

/// A key range `[lo, hi)`.
pub type KeyRange = (i128, i128);

/// One piece a repair re-copies: a key range, or (with `None`) a list of keys.
type Piece = (Option<KeyRange>, Vec<i128>);

/// Most rows one repair step holds (a larger range is split in halves).
const MAX_REPAIR_ROWS: u64 = 10_000;

/// Re-copies what `pieces` names (ranges `[lo, hi)` and single keys: what a verify found
/// different) from the old layout into the new one, correcting rows the copy's `INSERT IGNORE`
/// cannot: a changed row, a row the old layout does not have (a dual write that died between its
/// two commits). Per piece: the old layout's rows are read with locking reads in a transaction on
/// every old partition (so a dual write to them waits, as for the copy), the new layout's rows of
/// the piece deleted and the read rows inserted, then the old transactions committed. Returns
/// the rows written.
#[allow(clippy::too_many_arguments)]
pub async fn repair(
    old: &mut [Table],
    new: &mut [Table],
    new_rule: &TableRule,
    columns: &[String],
    pk_index: usize,
    key_index: usize,
    pieces: &Dirty,
) -> Result<u64, String> {
    let pk = &columns[pk_index];
    let mut todo: Vec<Piece> = pieces
        .ranges
        .iter()
        .map(|r| (Some(*r), Vec::new()))
        .collect();
    todo.extend(
        pieces
            .keys
            .chunks(KEYS_PER_QUERY)
            .map(|k| (None, k.to_vec())),
    );
    let mut written = 0;
    while let Some((range, keys)) = todo.pop() {
        let cond = piece_condition(pk, range, &keys);
        if let Some((lo, hi)) = range
            && hi - lo > 1
        {
            let mut rows = 0u64;
            for t in old.iter_mut() {
                let sql = format!(
                    "SELECT COUNT(*) FROM `{}` WHERE {cond}",
                    t.table.replace('`', "``")
                );
                let r = one_row(t, &sql).await?;
                rows += r
                    .first()
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if rows > MAX_REPAIR_ROWS {
                let mid = lo + (hi - lo) / 2;
                todo.push((Some((lo, mid)), Vec::new()));
                todo.push((Some((mid, hi)), Vec::new()));
                continue;
            }
        }
        let r = repair_piece(old, new, new_rule, columns, pk_index, key_index, &cond).await;
        if r.is_err() {
            for t in old.iter_mut() {
                let _ = t.query("ROLLBACK").await;
            }
        }
        written += r?;
    }
    Ok(written)
}

async fn repair_piece(
    old: &mut [Table],
    new: &mut [Table],
    new_rule: &TableRule,
    columns: &[String],
    pk_index: usize,
    key_index: usize,
    cond: &str,
) -> Result<u64, String> {
    let pk = &columns[pk_index];
    let mut rows: Vec<Row> = Vec::new();
    for t in old.iter_mut() {
        t.query("BEGIN").await?;
        let text = t
            .query(&read_where_sql(&t.table, columns, pk, cond))
            .await?;
        for r in &text {
            rows.push(
                r.iter()
                    .map(|c| unhex(c.as_deref()))
                    .collect::<Result<_, _>>()?,
            );
        }
    }
    for t in new.iter_mut() {
        let sql = format!("DELETE FROM `{}` WHERE {cond}", t.table.replace('`', "``"));
        t.query(&sql).await?;
    }
    let n = rows.len() as u64;
    for (q, part) in route_rows(new_rule, key_index, rows).map_err(|e| e.to_string())? {
        let t = new
            .get_mut(q)
            .ok_or_else(|| format!("no connection for new partition {q}"))?;
        let sql = insert_ignore_sql(&t.table, columns, &part);
        t.query(&sql).await?;
    }
    for t in old.iter_mut() {
        t.query("COMMIT").await?;
    }
    Ok(n)
}

/// The verifier's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The key ranges compared (for a verify of keys, each batch's first and last key + 1).
    pub ranges: Vec<(i128, i128)>,
    /// Keys compared one by one (a verify of what changed); 0 for a full pass.
    pub keys: usize,
    /// Over what was compared of the old layout.
    pub old: Checksum,
    /// Over what was compared of the new layout.
    pub new: Checksum,
    /// Ranges (or key batches) whose checksums differ.
    pub mismatches: Vec<Mismatch>,
}

/// Keys per checksum query of a verify of single keys.
const KEYS_PER_QUERY: usize = 1_000;

async fn one_row(t: &mut Table, sql: &str) -> Result<Vec<Option<String>>, String> {
    t.query(sql)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| format!("`{}`: no row from {sql}", t.table))
}

/// Compares both layouts chunk by chunk (about `chunk_rows` keys each): row counts and the XOR
/// of row digests per key range, summed over every partition of each layout. Exact only while no
/// write runs (the cut-over's pause); during the copy it is a progress check.
pub async fn verify(
    old: &mut [Table],
    new: &mut [Table],
    columns: &[String],
    pk: &str,
    chunk_rows: u64,
) -> Result<Verification, String> {
    verify_with(old, new, columns, pk, chunk_rows, &mut |_| {}).await
}

/// [`verify`] calling `on_ranges` with the ranges once they are cut and before the first
/// checksum (the reshard job starts recording dual writes' keys against them there).
pub async fn verify_with(
    old: &mut [Table],
    new: &mut [Table],
    columns: &[String],
    pk: &str,
    chunk_rows: u64,
    on_ranges: &mut dyn FnMut(&[KeyRange]),
) -> Result<Verification, String> {
    let pkq = format!("`{}`", pk.replace('`', "``"));
    let (mut min, mut max, mut rows) = (None::<i128>, None::<i128>, 0u64);
    let n_old = old.len();
    for (i, t) in old.iter_mut().chain(new.iter_mut()).enumerate() {
        let sql = format!(
            "SELECT MIN({pkq}), MAX({pkq}), COUNT(*) FROM `{}`",
            t.table.replace('`', "``")
        );
        let r = one_row(t, &sql).await?;
        let num = |i: usize| {
            r.get(i)
                .cloned()
                .flatten()
                .and_then(|v| v.parse::<i128>().ok())
        };
        if let (Some(lo), Some(hi)) = (num(0), num(1)) {
            min = Some(min.map_or(lo, |m| m.min(lo)));
            max = Some(max.map_or(hi, |m| m.max(hi)));
        }
        if i < n_old {
            rows += num(2).unwrap_or(0) as u64;
        }
    }
    let ranges = match (min, max) {
        (Some(lo), Some(hi)) => chunks(lo, hi, rows.max(1), chunk_rows),
        _ => Vec::new(),
    };
    on_ranges(&ranges);
    verify_ranges(old, new, columns, pk, ranges).await
}

/// Compares both layouts over the given key ranges `[lo, hi)`.
pub async fn verify_ranges(
    old: &mut [Table],
    new: &mut [Table],
    columns: &[String],
    pk: &str,
    ranges: Vec<(i128, i128)>,
) -> Result<Verification, String> {
    let sql = |t: &str, i: usize| {
        let (lo, hi) = ranges[i];
        checksum_sql(t, columns, pk, lo, hi)
    };
    let sums = sums_of(old, new, ranges.len(), &sql).await?;
    Ok(verification(ranges, 0, &sums))
}

/// Compares both layouts over what `dirty` names: each range, and the single keys in batches
/// of [`KEYS_PER_QUERY`] (a batch that differs is reported as the span of its keys). `dirty.all`
/// is not looked at (the caller runs a full [`verify`] then).
pub async fn verify_dirty(
    old: &mut [Table],
    new: &mut [Table],
    columns: &[String],
    pk: &str,
    dirty: &Dirty,
) -> Result<Verification, String> {
    let batches: Vec<&[i128]> = dirty.keys.chunks(KEYS_PER_QUERY).collect();
    let n_ranges = dirty.ranges.len();
    let sql = |t: &str, i: usize| {
        if i < n_ranges {
            let (lo, hi) = dirty.ranges[i];
            checksum_sql(t, columns, pk, lo, hi)
        } else {
            checksum_keys_sql(t, columns, pk, batches[i - n_ranges])
        }
    };
    let sums = sums_of(old, new, n_ranges + batches.len(), &sql).await?;
    let mut ranges = dirty.ranges.clone();
    ranges.extend(batches.iter().map(|b| {
        (
            b.first().copied().unwrap_or_default(),
            b.last().copied().unwrap_or_default() + 1,
        )
    }));
    Ok(verification(ranges, dirty.keys.len(), &sums))
}

/// Per piece `i` (of `n`) and layout: the checksum of `sql(table, i)` summed over the layout's
/// tables.
async fn sums_of(
    old: &mut [Table],
    new: &mut [Table],
    n: usize,
    sql: &dyn Fn(&str, usize) -> String,
) -> Result<[Vec<Checksum>; 2], String> {
    // Piece by piece over both layouts (not layout by layout): the old and new checksums of a
    // piece are read within a few queries of each other, so while writes run a piece differs
    // only if a write to it is in flight then.
    let (mut olds, mut news) = (vec![Checksum::default(); n], vec![Checksum::default(); n]);
    for (i, (o, w)) in olds.iter_mut().zip(news.iter_mut()).enumerate() {
        for (sum, tables) in [(o, &mut *old), (w, &mut *new)] {
            for t in tables.iter_mut() {
                let q = sql(&t.table, i);
                let r = one_row(t, &q).await?;
                let c = Checksum::parse(
                    r.first().cloned().flatten().as_deref().map(str::as_bytes),
                    r.get(1).cloned().flatten().as_deref().map(str::as_bytes),
                )?;
                sum.add(c);
            }
        }
    }
    Ok([olds, news])
}

fn verification(ranges: Vec<(i128, i128)>, keys: usize, sums: &[Vec<Checksum>; 2]) -> Verification {
    let total = |v: &[Checksum]| {
        let mut t = Checksum::default();
        v.iter().for_each(|c| t.add(*c));
        t
    };
    Verification {
        mismatches: compare(&ranges, &sums[0], &sums[1]),
        old: total(&sums[0]),
        new: total(&sums[1]),
        keys,
        ranges,
    }
}
