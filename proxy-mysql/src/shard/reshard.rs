//! Online resharding: the copier and the verifier over backend connections. The pure parts (plan,
//! chunks, SQL text, routing of rows, checksums) are `router::sql::shard::reshard`; the design and
//! the copy/dual-write race are in docs/sharding.md ("Resharding").

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use router::config::BackendTls;
use router::sql::shard::TableRule;
use router::sql::shard::reshard::{
    Checksum, Mismatch, Row, checksum_sql, chunks, compare, insert_ignore_sql, read_chunk_sql,
    route_rows, row_pk, unhex,
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

/// The verifier's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The key ranges compared.
    pub ranges: Vec<(i128, i128)>,
    /// Over the whole old layout.
    pub old: Checksum,
    /// Over the whole new layout.
    pub new: Checksum,
    /// Ranges whose checksums differ.
    pub mismatches: Vec<Mismatch>,
}

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
    let mut sums = [
        vec![Checksum::default(); ranges.len()],
        vec![Checksum::default(); ranges.len()],
    ];
    for (side, tables) in [old, new].into_iter().enumerate() {
        for t in tables.iter_mut() {
            for (i, &(lo, hi)) in ranges.iter().enumerate() {
                let r = one_row(t, &checksum_sql(&t.table, columns, pk, lo, hi)).await?;
                let c = Checksum::parse(
                    r.first().cloned().flatten().as_deref().map(str::as_bytes),
                    r.get(1).cloned().flatten().as_deref().map(str::as_bytes),
                )?;
                sums[side][i].add(c);
            }
        }
    }
    let total = |v: &[Checksum]| {
        let mut t = Checksum::default();
        v.iter().for_each(|c| t.add(*c));
        t
    };
    Ok(Verification {
        mismatches: compare(&ranges, &sums[0], &sums[1]),
        old: total(&sums[0]),
        new: total(&sums[1]),
        ranges,
    })
}
