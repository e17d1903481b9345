//! SQL analysis: statement classification for read/write splitting, query digests, and (later)
//! sharding plans.

pub mod advice;
pub mod classify;
pub mod digest;
pub mod guard;
pub mod lexer;
pub mod plan;
pub mod policy;
pub mod shard;
pub mod stmt_cache;

pub use classify::{Classified, StmtKind, classify, classify_with_digest};
pub use digest::{Digest, digest};
pub use lexer::Hint;
pub use stmt_cache::{Analysed, StmtCache};
