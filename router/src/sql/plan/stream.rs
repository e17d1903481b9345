//! The streaming executor: sans-IO, fed with the shards' reply packets as they arrive, emitting the
//! client's reply packets as soon as they are known. It is the streaming form of the plan
//! primitives whose buffered (pull) form [`super::execute`] runs over [`super::RowSource`]s; both
//! share the primitives' code ([`super::merge_sort::first_head`] picks the next row of a k-way
//! merge, [`super::GroupStream`] folds sorted groups and runs HAVING, the projection, OFFSET/LIMIT
//! and the helper-column trim, [`encode_text_row`]/[`encode_binary_row`] render rows).
//!
//! Three plan shapes stream ([`Streamed::of`]):
//! - **plain scatter** (`Scatter` without a merge): the units' results are copied one after the
//!   other (the first unit's column definitions, every unit's rows, one EOF);
//! - **sorted read** (`[Trim] → [Limit] → MergeSort`): a k-way merge holding one head row per unit
//!   (its key columns decoded; ties go to the lower unit), OFFSET rows skipped, at most LIMIT rows
//!   sent, rows copied byte for byte (re-sequenced) or, with `Trim`, cut to the visible cells;
//! - **grouped read** ([`super::grouped_read`]): the same merge over whole decoded rows, pushed
//!   into a [`super::GroupStream`], each finished group sent as soon as the next one starts.
//!
//! The caller (proxy-mysql's `shard/stream.rs`) sends every unit's SQL, then loops: [`StreamExec::step`]
//! writes whatever output is ready into the client's buffer and says which unit's next packet it
//! needs ([`Want::Read`]) or that the reply is complete ([`Want::Done`]); the caller reads one packet
//! of that unit from its socket and hands it over with [`StreamExec::feed`] (or
//! [`StreamExec::lost`] when the read failed). Each unit's reply is tracked by
//! [`codec::mysql::reply::ReplyTracker`], so where a reply ends is decided in one place. Afterwards
//! [`StreamExec::drain`] tells, per unit, whether its connection is clean, must be read to the end
//! of its reply first ([`StreamExec::discard`] feeds those packets), or must be closed.
//!
//! Output: the client's packets are framed into the caller's buffer with sequence ids from 1
//! ([`StreamExec::seq`] is the next one). In the text protocol rows are copied; for a prepared
//! statement (`binary`) column definitions are re-encoded and every row decoded and re-encoded as a
//! binary row, exactly as the buffered path sends them. EOF packets come from
//! [`codec::mysql::EofPacket`]. On an error nothing more is written: the caller decides whether the
//! ERR replaces the reply (nothing flushed yet) or ends it (a server ends a result set that way).
//!
//! Memory: one head row per unit (sorted, grouped), the open group (its COUNT/SUM(DISTINCT) value
//! sets within `max_rows`), one unit's column definitions (the first unit's, kept for the output).
//! Merged rows are never collected, so the row budget does not apply to them.

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::com;
use codec::mysql::reply::{ReplyEnd, ReplyTracker, Step as ReplyStep};
use codec::mysql::response::is_end_of_rows;
use codec::mysql::{
    BinaryRow, ColumnDefinition, EofPacket, ErrPacket, OkPacket, TextRow, Value, encode_packet,
};

use super::collate;
use super::exec::{ExecLimits, Row};
use super::group_stream::{GroupStream, GroupedRead, grouped_read};
use super::limit::{Admit, LimitCounter};
use super::merge_sort::{SortKey, check_key_collations, first_head};
use super::{MergeSort, Plan, ShardError, Unit};

/// A sorted read: `[Trim] → [Limit] → MergeSort(units)`.
#[derive(Debug, Clone, Copy)]
pub struct SortedRead<'a> {
    /// The merge (units and keys).
    pub merge: &'a MergeSort,
    /// Merged rows skipped first.
    pub offset: u64,
    /// Merged rows sent at most (`None`: all).
    pub count: Option<u64>,
    /// Helper columns cut from the end of every row.
    pub drop: usize,
}

/// The sorted-read shape of `p`, if it has one (with at least one unit).
pub fn sorted_read(p: &Plan) -> Option<SortedRead<'_>> {
    let (drop, p) = match p {
        Plan::Trim(t) => (t.drop, &*t.input),
        p => (0, p),
    };
    let (offset, count, p) = match p {
        Plan::Limit(l) => (
            l.offset,
            (l.count != u64::MAX).then_some(l.count),
            &*l.input,
        ),
        p => (0, None, p),
    };
    match p {
        Plan::MergeSort(m) if !m.input.units.is_empty() => Some(SortedRead {
            merge: m,
            offset,
            count,
            drop,
        }),
        _ => None,
    }
}

/// A plan shape the streaming executor runs.
#[derive(Debug)]
pub enum Streamed<'a> {
    /// A plain read scatter (or one routed read): results copied unit after unit.
    Concat(&'a [Unit]),
    /// A k-way merge of sorted units.
    Sorted(SortedRead<'a>),
    /// A sorted merge folded group by group.
    Grouped(GroupedRead<'a>),
}

impl<'a> Streamed<'a> {
    /// The merging shape of `p` (sorted or grouped read), if it has one. A plain scatter is
    /// [`Streamed::Concat`], chosen by the caller (it knows whether the units are reads).
    pub fn of(p: &'a Plan) -> Option<Self> {
        if let Some(s) = sorted_read(p) {
            return Some(Streamed::Sorted(s));
        }
        grouped_read(p).map(Streamed::Grouped)
    }

    /// The units, in the order their replies are read.
    pub fn units(&self) -> &'a [Unit] {
        match self {
            Streamed::Concat(u) => u,
            Streamed::Sorted(s) => &s.merge.input.units,
            Streamed::Grouped(g) => &g.merge.input.units,
        }
    }
}

/// How the client's reply is encoded, and the limits of the merge.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Binary protocol (a prepared statement): definitions and rows re-encoded.
    pub binary: bool,
    /// Server status flags of the client's EOF (or OK) packets.
    pub status: u16,
    /// Capabilities of the shard connections (their replies are tracked with them). Without
    /// `CLIENT_DEPRECATE_EOF`: the executor expects the EOF packets Furrow's backends send.
    pub backend_caps: u32,
    /// The merge's memory limits (a grouped read's distinct-value sets).
    pub limits: ExecLimits,
    /// How many more packets a grouped read's unit is drained after an early end before its
    /// connection is closed instead (`max_limit_rows`).
    pub drain_rows: u64,
}

/// What the executor needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The next packet of this unit's reply ([`StreamExec::feed`] it).
    Read(usize),
    /// The reply is complete: its last packet is written, or it failed ([`StreamExec::error`]).
    Done,
}

/// Why a streamed reply failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamError {
    /// A unit's shard answered ERR (its connection is fine).
    Refused {
        /// The unit.
        unit: usize,
        /// The shard's ERR.
        err: ErrPacket,
    },
    /// A unit's reply could not be read (its connection is unusable now).
    Lost {
        /// The unit.
        unit: usize,
        /// Why.
        reason: String,
    },
    /// The merge itself failed (a collation the proxy does not know, groups out of order, a
    /// group's distinct values over the budget, a value that does not encode).
    Merge(ShardError),
}

/// What the caller does with a unit's connection when the reply is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Its reply was read to the end (or never sent): give it back as it is.
    Clean,
    /// Read the rest of its reply ([`StreamExec::discard`] each packet), then give it back.
    All,
    /// Read at most this many more packets, then close it if the reply goes on.
    UpTo(u64),
    /// Close it: its state is unknown, or the rest could be the whole table.
    Close,
}

/// How far a unit's reply has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing read yet.
    Unread,
    /// The column count was read; this many definitions come next.
    Defs(u64),
    /// Every definition was read; the EOF closing them comes next.
    DefsEof,
    /// At the rows.
    Rows,
    /// The reply was read to its end.
    Done,
    /// The connection cannot be used any more.
    Broken,
}

/// One unit's reply as far as it was fed.
struct UnitReply {
    tracker: ReplyTracker,
    phase: Phase,
    /// The raw column-count packet (until the unit's header is handled) and the column count.
    count: Option<Bytes>,
    ncols: u64,
    /// The raw definitions, kept only where they are used (a merge uses the first unit's).
    defs: Vec<Bytes>,
    keep_defs: bool,
    /// The row fed and not taken yet; `Some(None)`: the end of the rows.
    next: Option<Option<Bytes>>,
}

impl UnitReply {
    fn new(caps: u32, keep_defs: bool) -> Self {
        Self {
            tracker: ReplyTracker::new(com::QUERY, caps),
            phase: Phase::Unread,
            count: None,
            ncols: 0,
            defs: Vec::new(),
            keep_defs,
            next: None,
        }
    }

    fn header_read(&self) -> bool {
        !matches!(self.phase, Phase::Unread | Phase::Defs(_) | Phase::DefsEof)
    }
}

/// What one move of the executor gives: the packet it needs next (or `Done`), nothing yet (move
/// again), or why it failed (boxed: the moves return often, errors rarely).
type Moved = Result<Option<Want>, Box<StreamError>>;

/// One head of a k-way merge: the row packet and its decoded cells.
struct Head {
    payload: Bytes,
    row: Row,
}

/// Where the executor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading every unit's column definitions (merges), from this unit on.
    Headers(usize),
    /// Reading every unit's first row (merges), from this unit on.
    Fill(usize),
    /// Copying unit `0`'s result (concat), its header sent or not.
    Copy(usize),
    /// Merging; waiting for the next row of this unit (after its head was taken), if any.
    Merge(Option<usize>),
    /// Complete (the last packet written, or failed).
    Done,
}

/// The streaming shape's own state.
enum Mode<'a> {
    Concat {
        /// The client's columns (binary: the first unit's definitions, decoded).
        out_cols: Vec<ColumnDefinition>,
        /// The current unit's columns (binary: to decode its rows).
        unit_cols: Vec<ColumnDefinition>,
        started: bool,
    },
    Sorted {
        read: SortedRead<'a>,
        merger: Merger,
        limit: LimitCounter,
        /// Cells kept of each row (`None`: the whole row, no trim).
        keep: Option<usize>,
        /// The client's columns (binary).
        out_cols: Vec<ColumnDefinition>,
    },
    Grouped {
        read: GroupedRead<'a>,
        merger: Merger,
        /// Boxed: the largest state, and one per statement.
        groups: Option<Box<GroupStream>>,
    },
}

/// Frames the client's packets (sequence ids, scratch space for encoding).
struct Writer {
    seq: u8,
    status: u16,
    binary: bool,
    scratch: BytesMut,
    cells: Vec<Option<Bytes>>,
}

impl Writer {
    fn packet(&mut self, out: &mut BytesMut, payload: &[u8]) {
        self.seq = encode_packet(self.seq, payload, out);
    }

    /// Frames what was encoded into `scratch`.
    fn scratch(&mut self, out: &mut BytesMut) {
        self.seq = encode_packet(self.seq, &self.scratch, out);
    }

    fn eof(&mut self, out: &mut BytesMut) {
        self.scratch.clear();
        EofPacket {
            warnings: 0,
            status: self.status,
        }
        .encode(&mut self.scratch);
        self.scratch(out);
    }

    fn count(&mut self, out: &mut BytesMut, n: usize) {
        self.scratch.clear();
        codec::mysql::resultset::encode_column_count(n as u64, &mut self.scratch);
        self.scratch(out);
    }

    /// The column count, `cols` re-encoded and the EOF.
    fn columns(&mut self, out: &mut BytesMut, cols: &[ColumnDefinition]) {
        self.count(out, cols.len());
        for c in cols {
            self.scratch.clear();
            c.encode(&mut self.scratch);
            self.scratch(out);
        }
        self.eof(out);
    }

    /// A row of values for `cols` in the client's protocol.
    fn values(
        &mut self,
        out: &mut BytesMut,
        row: Row,
        cols: &[ColumnDefinition],
    ) -> Result<(), StreamError> {
        self.scratch.clear();
        if self.binary {
            encode_binary_row(row, cols, &mut self.scratch)
        } else {
            encode_text_row(&row, cols, &mut self.scratch)
        }
        .map_err(StreamError::Merge)?;
        self.scratch(out);
        Ok(())
    }
}

/// The sans-IO streaming executor of one statement (see the module docs).
pub struct StreamExec<'a> {
    mode: Mode<'a>,
    units: Vec<UnitReply>,
    drain_rows: u64,
    limits: ExecLimits,
    stage: Stage,
    error: Option<StreamError>,
    /// The unit fed last is still inside its column definitions (see [`StreamExec::step`]).
    again: Option<usize>,
    w: Writer,
}

fn lost(unit: usize, reason: impl Into<String>) -> StreamError {
    StreamError::Lost {
        unit,
        reason: reason.into(),
    }
}

impl<'a> StreamExec<'a> {
    /// An executor for `shape` (every unit's SQL is sent by the caller before the first
    /// [`StreamExec::step`]).
    pub fn new(shape: Streamed<'a>, opts: StreamOptions) -> Self {
        let n = shape.units().len();
        let concat = matches!(shape, Streamed::Concat(_));
        let (mode, stage) = match shape {
            Streamed::Concat(_) => (
                Mode::Concat {
                    out_cols: Vec::new(),
                    unit_cols: Vec::new(),
                    started: false,
                },
                Stage::Copy(0),
            ),
            Streamed::Sorted(read) => (
                Mode::Sorted {
                    read,
                    merger: Merger::new(read.merge.keys.clone()),
                    limit: LimitCounter::new(read.offset, read.count.unwrap_or(u64::MAX)),
                    keep: None,
                    out_cols: Vec::new(),
                },
                Stage::Headers(0),
            ),
            Streamed::Grouped(read) => (
                Mode::Grouped {
                    merger: Merger::new(read.merge.keys.clone()),
                    read,
                    groups: None,
                },
                Stage::Headers(0),
            ),
        };
        Self {
            mode,
            // A plain scatter decodes every unit's definitions (binary: each unit's rows by its
            // own); a merge sends and decodes the first unit's only.
            units: (0..n)
                .map(|i| UnitReply::new(opts.backend_caps, concat || i == 0))
                .collect(),
            drain_rows: opts.drain_rows,
            limits: opts.limits,
            stage,
            error: None,
            again: None,
            w: Writer {
                seq: 1,
                status: opts.status,
                binary: opts.binary,
                scratch: BytesMut::with_capacity(256),
                cells: Vec::new(),
            },
        }
    }

    /// The number of units.
    pub fn unit_count(&self) -> usize {
        self.units.len()
    }

    /// The next sequence id of the client's reply (for an ERR that ends it).
    pub fn seq(&self) -> u8 {
        self.w.seq
    }

    /// Why the reply failed, once [`Want::Done`] was returned (`None`: it is complete).
    pub fn error(&self) -> Option<&StreamError> {
        self.error.as_ref()
    }

    /// Takes the error (see [`StreamExec::error`]).
    pub fn take_error(&mut self) -> Option<StreamError> {
        self.error.take()
    }

    /// Hands over the next packet of `unit`'s reply (the one [`Want::Read`] asked for).
    pub fn feed(&mut self, unit: usize, payload: Bytes) {
        self.again = None;
        let Some(u) = self.units.get_mut(unit) else {
            return;
        };
        let step = match u.tracker.feed(&payload) {
            Ok(s) => s,
            Err(e) => return self.lose(unit, format!("a reply from a shard: {e}")),
        };
        match (u.phase, step) {
            (_, ReplyStep::Done(ReplyEnd::Err)) => {
                u.phase = Phase::Done;
                match ErrPacket::decode(payload) {
                    Ok(err) => self.fail(StreamError::Refused { unit, err }),
                    Err(e) => self.lose(unit, e.to_string()),
                }
            }
            // An OK (with more results following): not a result set.
            (Phase::Unread, ReplyStep::More) if payload.first() == Some(&0x00) => {
                self.lose(unit, "expected rows from a shard, got an OK packet");
            }
            (Phase::Unread, ReplyStep::More) => {
                // The classic count (a connection with cached metadata adds a byte; it goes
                // to the client as a classic one).
                match codec::mysql::resultset::split_column_count(&payload) {
                    Ok((n, classic)) => {
                        u.phase = Phase::Defs(n);
                        u.ncols = n;
                        u.count = Some(classic);
                        self.again = Some(unit);
                    }
                    Err(e) => self.lose(unit, e.to_string()),
                }
            }
            (Phase::Unread, _) => {
                self.lose(unit, "expected rows from a shard, got an OK packet");
            }
            (Phase::Defs(left), ReplyStep::More) => {
                if u.keep_defs {
                    u.defs.push(payload);
                }
                u.phase = if left > 1 {
                    Phase::Defs(left - 1)
                } else {
                    Phase::DefsEof
                };
                self.again = Some(unit);
            }
            (Phase::DefsEof, ReplyStep::More) => u.phase = Phase::Rows,
            (Phase::Rows, ReplyStep::More) if is_end_of_rows(&payload, false) => {
                self.lose(unit, "unexpected multi-result from a shard");
            }
            (Phase::Rows, ReplyStep::More) => u.next = Some(Some(payload)),
            (Phase::Rows, ReplyStep::Done(_)) => {
                u.phase = Phase::Done;
                u.next = Some(None);
            }
            _ => self.lose(unit, "an unexpected packet from a shard"),
        }
    }

    /// Reading `unit`'s reply failed (its connection is broken): the statement fails.
    pub fn lost(&mut self, unit: usize, reason: impl Into<String>) {
        self.lose(unit, reason);
    }

    /// Runs as far as the packets fed allow, framing the client's packets into `out`.
    #[inline]
    pub fn step(&mut self, out: &mut BytesMut) -> Want {
        // Inside a unit's column definitions nothing can move but that unit's reply: ask for its
        // next packet at once (the common case while the headers arrive).
        if let Some(u) = self.again.take() {
            return Want::Read(u);
        }
        self.run(out)
    }

    fn run(&mut self, out: &mut BytesMut) -> Want {
        loop {
            // An error ends the reply at once, except while the merges read every unit's header.
            if self.error.is_some() && !matches!(self.stage, Stage::Headers(_)) {
                self.stage = Stage::Done;
            }
            let r = match self.stage {
                Stage::Done => return Want::Done,
                Stage::Copy(i) => self.copy(out, i),
                Stage::Headers(i) => self.headers(out, i),
                Stage::Fill(i) => self.fill(out, i),
                Stage::Merge(waiting) => self.merge(out, waiting),
            };
            match r {
                Ok(Some(w)) => return w,
                Ok(None) => {}
                Err(e) => match *e {
                    StreamError::Lost { unit, reason } => self.lose(unit, reason),
                    e => self.fail(e),
                },
            }
        }
    }

    /// What to do with `unit`'s connection once the reply is complete (see [`Drain`]).
    pub fn drain(&self, unit: usize) -> Drain {
        let Some(u) = self.units.get(unit) else {
            return Drain::Clean;
        };
        match u.phase {
            Phase::Done => Drain::Clean,
            Phase::Broken => Drain::Close,
            // Its rows were not reached: the reply is read to its end.
            Phase::Unread | Phase::Defs(_) | Phase::DefsEof => Drain::All,
            Phase::Rows => match &self.mode {
                // A plain scatter stops inside a unit only when the client is gone.
                Mode::Concat { .. } => Drain::Close,
                // A LIMIT asked each unit for at most offset + count rows: bounded.
                Mode::Sorted { read, .. } if read.count.is_some() => Drain::All,
                // No LIMIT: the rest could be the whole table (the server stops at its next
                // write).
                Mode::Sorted { .. } => Drain::Close,
                // The units carry a LIMIT only when the planner could push one down.
                Mode::Grouped { .. } => Drain::UpTo(self.drain_rows),
            },
        }
    }

    /// Feeds a packet of `unit`'s reply while draining it (its content is not used); returns
    /// whether the reply is complete. A packet that breaks the protocol marks the unit broken
    /// ([`StreamExec::drain`] says [`Drain::Close`]).
    pub fn discard(&mut self, unit: usize, payload: &[u8]) -> bool {
        let Some(u) = self.units.get_mut(unit) else {
            return true;
        };
        match u.tracker.feed(payload) {
            Ok(ReplyStep::Done(_)) => {
                u.phase = Phase::Done;
                true
            }
            Ok(ReplyStep::More) if u.phase == Phase::Rows && is_end_of_rows(payload, false) => {
                // A second result set: not a reply this executor asked for.
                u.phase = Phase::Broken;
                true
            }
            Ok(ReplyStep::More) => false,
            Err(_) => {
                u.phase = Phase::Broken;
                true
            }
        }
    }

    /// Marks `unit`'s connection as unusable (a drain gave up, a read failed while draining).
    pub fn close(&mut self, unit: usize) {
        if let Some(u) = self.units.get_mut(unit) {
            u.phase = Phase::Broken;
        }
    }

    fn lose(&mut self, unit: usize, reason: impl Into<String>) {
        self.again = None;
        if let Some(u) = self.units.get_mut(unit) {
            u.phase = Phase::Broken;
            u.next = None;
        }
        self.fail(lost(unit, reason));
    }

    /// Records the first error.
    fn fail(&mut self, e: StreamError) {
        self.error.get_or_insert(e);
    }

    /// Plain scatter: unit `i`'s header, then its rows; the next unit; the final EOF.
    fn copy(&mut self, out: &mut BytesMut, i: usize) -> Moved {
        let Mode::Concat {
            out_cols,
            unit_cols,
            started,
        } = &mut self.mode
        else {
            return Ok(Some(Want::Done));
        };
        let w = &mut self.w;
        let Some(u) = self.units.get_mut(i) else {
            // Every unit copied.
            if *started {
                w.eof(out);
            } else {
                // No unit at all (a planned scatter has some): an empty OK.
                w.scratch.clear();
                OkPacket {
                    status: w.status,
                    ..Default::default()
                }
                .encode(
                    codec::mysql::consts::capability::CLIENT_PROTOCOL_41,
                    &mut w.scratch,
                );
                w.scratch(out);
            }
            self.stage = Stage::Done;
            return Ok(None);
        };
        if !u.header_read() {
            return Ok(Some(Want::Read(i)));
        }
        if let Some(count) = u.count.take() {
            // This unit's header: the first one goes to the client.
            let defs = std::mem::take(&mut u.defs);
            if w.binary {
                *unit_cols = decode_columns(&defs).map_err(|reason| lost(i, reason))?;
            }
            if !*started {
                *started = true;
                if w.binary {
                    *out_cols = unit_cols.clone();
                    w.columns(out, out_cols);
                } else {
                    w.packet(out, &count);
                    for d in &defs {
                        w.packet(out, d);
                    }
                    w.eof(out);
                }
            }
            return Ok(None);
        }
        match u.next.take() {
            None => Ok(Some(Want::Read(i))),
            Some(None) => {
                self.stage = Stage::Copy(i + 1);
                Ok(None)
            }
            Some(Some(row)) => {
                if w.binary {
                    let values = decode_row(row, unit_cols, &mut w.cells)
                        .map_err(|e| lost(i, format!("a row from a shard: {e}")))?;
                    w.scratch.clear();
                    encode_binary_row(values, out_cols, &mut w.scratch)
                        .map_err(|e| lost(i, format!("a row from a shard: {e}")))?;
                    w.scratch(out);
                } else {
                    w.packet(out, &row);
                }
                Ok(Some(Want::Read(i)))
            }
        }
    }

    /// Merges: every unit's header (all of them, even after an error, so that a statement that
    /// fails on every shard leaves every connection clean), then the client's header.
    fn headers(&mut self, out: &mut BytesMut, i: usize) -> Moved {
        if let Some(u) = self.units.get(i) {
            if !u.header_read() {
                return Ok(Some(Want::Read(i)));
            }
            let first = self.units.first().map_or(0, |f| f.ncols);
            if self.error.is_none() && u.phase != Phase::Broken && first != u.ncols {
                self.lose(i, "the units returned different column counts");
            }
            self.stage = Stage::Headers(i + 1);
            return Ok(None);
        }
        if self.error.is_some() {
            self.stage = Stage::Done;
            return Ok(Some(Want::Done));
        }
        let (count, defs) = match self.units.first_mut() {
            Some(u) => (u.count.take(), std::mem::take(&mut u.defs)),
            None => (None, Vec::new()),
        };
        for u in &mut self.units {
            u.count = None;
        }
        let cols = decode_columns(&defs).map_err(|reason| lost(0, reason))?;
        let n = cols.len();
        let units = self.units.len();
        if let Mode::Sorted { merger, .. } | Mode::Grouped { merger, .. } = &mut self.mode {
            merger.heads.reserve_exact(units);
        }
        let w = &mut self.w;
        match &mut self.mode {
            Mode::Sorted {
                read,
                merger,
                keep,
                out_cols,
                ..
            } => {
                *keep = (read.drop > 0).then(|| n.saturating_sub(read.drop));
                let visible = keep.unwrap_or(n);
                // Binary rows are re-encoded from values: every column is decoded. Otherwise
                // the keys and the collation helpers at the end.
                let helpers = read.merge.input.collations.len();
                merger.start(cols.clone(), w.binary, helpers);
                if w.binary {
                    // The definitions as the shard sent them (before the collations are
                    // learnt), as the buffered path sends them.
                    *out_cols = cols.into_iter().take(visible).collect();
                    w.columns(out, out_cols);
                } else {
                    match count {
                        Some(count) if visible == n => w.packet(out, &count),
                        _ => w.count(out, visible),
                    }
                    for d in defs.iter().take(visible) {
                        w.packet(out, d);
                    }
                    w.eof(out);
                }
            }
            Mode::Grouped { merger, .. } => merger.start(cols, true, 0),
            Mode::Concat { .. } => {}
        }
        self.stage = Stage::Fill(0);
        Ok(None)
    }

    /// Unit `i`'s next row as a merge head: `None` when it was not fed yet, `Some(None)` at the
    /// end of its rows.
    fn take_head(&mut self, i: usize) -> Result<Option<Option<Head>>, StreamError> {
        let Some(u) = self.units.get_mut(i) else {
            return Ok(Some(None));
        };
        let merger = match &self.mode {
            Mode::Sorted { merger, .. } | Mode::Grouped { merger, .. } => merger,
            Mode::Concat { .. } => return Ok(Some(None)),
        };
        match u.next.take() {
            None => Ok(None),
            Some(None) => Ok(Some(None)),
            Some(Some(payload)) => match merger.decode(&payload, &mut self.w.cells) {
                Ok(row) => Ok(Some(Some(Head { payload, row }))),
                Err(e) => Err(lost(i, format!("a row from a shard: {e}"))),
            },
        }
    }

    /// Merges: every unit's first row, then the keys' collations from them.
    fn fill(&mut self, out: &mut BytesMut, i: usize) -> Moved {
        if i < self.units.len() {
            let Some(h) = self.take_head(i)? else {
                return Ok(Some(Want::Read(i)));
            };
            if let Mode::Sorted { merger, .. } | Mode::Grouped { merger, .. } = &mut self.mode {
                merger.heads.push(h);
            }
            self.stage = Stage::Fill(i + 1);
            return Ok(None);
        }
        // The keys' collations, from the `COLLATION(...)` helper columns of the first rows (as
        // the buffered path learns them).
        let (merge, merger) = match &mut self.mode {
            Mode::Sorted { read, merger, .. } => (read.merge, merger),
            Mode::Grouped { read, merger, .. } => (read.merge, merger),
            Mode::Concat { .. } => return Ok(Some(Want::Done)),
        };
        let firsts: Vec<&[Value]> = merger
            .heads
            .iter()
            .flatten()
            .map(|h| h.row.as_slice())
            .collect();
        let cols = collate::resolve(&merge.input.collations, &merger.cols, &firsts)
            .map_err(StreamError::Merge)?;
        merger.cols = cols;
        check_key_collations(&merger.keys, &merger.cols, "ORDER BY").map_err(StreamError::Merge)?;
        if let Mode::Grouped {
            read,
            merger,
            groups,
        } = &mut self.mode
        {
            // The groups compare by the collations just learnt.
            let g = read.start(merger.cols.clone(), self.limits);
            self.w.columns(out, g.columns());
            *groups = Some(Box::new(g));
        }
        self.stage = Stage::Merge(None);
        Ok(None)
    }

    /// Merges: refills the unit whose head was taken, then sends the next row.
    fn merge(&mut self, out: &mut BytesMut, waiting: Option<usize>) -> Moved {
        if let Some(b) = waiting {
            let Some(h) = self.take_head(b)? else {
                return Ok(Some(Want::Read(b)));
            };
            if let Mode::Sorted { merger, .. } | Mode::Grouped { merger, .. } = &mut self.mode
                && let Some(slot) = merger.heads.get_mut(b)
            {
                *slot = h;
            }
            self.stage = Stage::Merge(None);
        }
        let w = &mut self.w;
        match &mut self.mode {
            Mode::Sorted {
                merger,
                limit,
                keep,
                out_cols,
                ..
            } => {
                if limit.is_done() {
                    return Ok(self.end(out));
                }
                let Some((b, head)) = merger.pop() else {
                    return Ok(self.end(out));
                };
                if limit.admit() == Admit::Pass {
                    if w.binary {
                        let mut row = head.row;
                        row.truncate(keep.unwrap_or(usize::MAX));
                        w.values(out, row, out_cols)?;
                    } else if let Some(k) = *keep {
                        // Cut the helper cells off (no value is re-rendered).
                        TextRow::decode_into(head.payload, merger.cols.len(), &mut w.cells)
                            .map_err(|e| lost(b, format!("a row from a shard: {e}")))?;
                        w.cells.truncate(k);
                        w.scratch.clear();
                        let row = TextRow {
                            cells: std::mem::take(&mut w.cells),
                        };
                        row.encode(&mut w.scratch);
                        w.cells = row.cells;
                        w.scratch(out);
                    } else {
                        w.packet(out, &head.payload);
                    }
                    if limit.is_done() {
                        return Ok(self.end(out));
                    }
                }
                self.stage = Stage::Merge(Some(b));
                Ok(None)
            }
            Mode::Grouped { merger, groups, .. } => {
                let Some(g) = groups.as_mut() else {
                    return Ok(self.end(out));
                };
                if g.is_done() {
                    return Ok(self.end(out));
                }
                let Some((b, head)) = merger.pop() else {
                    if let Some(row) = g.finish().map_err(StreamError::Merge)? {
                        w.values(out, row, g.columns())?;
                    }
                    return Ok(self.end(out));
                };
                if let Some(row) = g.push(head.row).map_err(StreamError::Merge)? {
                    w.values(out, row, g.columns())?;
                    if g.is_done() {
                        return Ok(self.end(out));
                    }
                }
                self.stage = Stage::Merge(Some(b));
                Ok(None)
            }
            Mode::Concat { .. } => Ok(Some(Want::Done)),
        }
    }

    /// The final EOF of a merge.
    fn end(&mut self, out: &mut BytesMut) -> Option<Want> {
        self.w.eof(out);
        self.stage = Stage::Done;
        Some(Want::Done)
    }
}

/// The k-way merge: the units' columns, the keys and one head row per unit.
struct Merger {
    cols: Vec<ColumnDefinition>,
    keys: Vec<SortKey>,
    /// Indexes of the columns decoded from each row.
    decoded: Vec<usize>,
    /// Each unit's next row (`None`: the unit is at its end).
    heads: Vec<Option<Head>>,
}

impl Merger {
    fn new(keys: Vec<SortKey>) -> Self {
        Self {
            cols: Vec::new(),
            keys,
            decoded: Vec::new(),
            heads: Vec::new(),
        }
    }

    /// Merges rows of `cols`; `whole_rows` decodes every column (the rows are aggregated or
    /// re-encoded), otherwise only the key columns and the `helpers` last columns.
    fn start(&mut self, cols: Vec<ColumnDefinition>, whole_rows: bool, helpers: usize) {
        let n = cols.len();
        self.decoded = if whole_rows {
            (0..n).collect()
        } else {
            self.keys
                .iter()
                .map(|k| k.index(n))
                .chain(n.saturating_sub(helpers)..n)
                .collect()
        };
        self.cols = cols;
    }

    /// A row of the columns' width holding the decoded columns (the others NULL).
    fn decode(
        &self,
        payload: &Bytes,
        cells: &mut Vec<Option<Bytes>>,
    ) -> Result<Row, codec::mysql::MysqlError> {
        let n = self.cols.len();
        TextRow::decode_into(payload.clone(), n, cells)?;
        let mut row = vec![Value::Null; n];
        for &i in &self.decoded {
            if let (Some(cell), Some(col), Some(slot)) =
                (cells.get(i), self.cols.get(i), row.get_mut(i))
            {
                *slot = codec::mysql::value::decode_text(cell.as_ref(), col)?;
            }
        }
        Ok(row)
    }

    /// Takes the head that comes first (ties: the lower unit) with its unit.
    fn pop(&mut self) -> Option<(usize, Head)> {
        let b = first_head(
            self.heads.iter().map(|h| h.as_ref().map(|h| &h.row)),
            &self.keys,
            &self.cols,
        )?;
        let head = self.heads.get_mut(b).and_then(Option::take)?;
        Some((b, head))
    }
}

/// Decodes column-definition packets.
fn decode_columns(defs: &[Bytes]) -> Result<Vec<ColumnDefinition>, String> {
    defs.iter()
        .map(|d| ColumnDefinition::decode(d.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a column definition from a shard: {e}"))
}

/// Encodes one merged row in the text protocol into `p` (values re-rendered for `cols`).
pub fn encode_text_row(
    row: &[Value],
    cols: &[ColumnDefinition],
    p: &mut BytesMut,
) -> Result<(), ShardError> {
    TextRow::encode_values(row, cols, p).map_err(encoding)
}

/// Encodes one merged row in the binary protocol into `p` (values encoded for `cols`).
pub fn encode_binary_row(
    row: Row,
    cols: &[ColumnDefinition],
    p: &mut BytesMut,
) -> Result<(), ShardError> {
    BinaryRow { values: row }.encode(cols, p).map_err(encoding)
}

/// Decodes a shard's text-protocol row into typed values, each cell by its column in `cols` (as
/// the buffered path reads every row). `cells` is scratch space.
pub fn decode_row(
    payload: Bytes,
    cols: &[ColumnDefinition],
    cells: &mut Vec<Option<Bytes>>,
) -> Result<Row, codec::mysql::MysqlError> {
    TextRow::decode_into(payload, cols.len(), cells)?;
    cells
        .iter()
        .zip(cols)
        .map(|(cell, col)| codec::mysql::value::decode_text(cell.as_ref(), col))
        .collect()
}

fn encoding(e: codec::mysql::MysqlError) -> ShardError {
    ShardError::Backend {
        shard: "merge".into(),
        message: format!("encoding a merged row: {e}"),
    }
}
