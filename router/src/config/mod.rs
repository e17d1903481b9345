//! The typed configuration model, its TOML loader and validation with precise positions.
//!
//! A config is read completely and validated completely before anything uses it: unknown keys, wrong
//! types, duplicate names, dangling references and impossible values are all reported at once, each
//! with file, line, column and what was expected. A [`Config`] value is therefore always valid; the
//! proxies publish it as an immutable snapshot.
//!
//! The reference for every key is `docs/config.md`; `examples/` holds commented files.

mod error;
mod governance;
mod mask;
mod model;
mod reader;
mod registry;
mod tls;
mod validate;

pub use error::{ConfigError, Problem, line_col};
pub use mask::{is_secret_key, mask_secrets};
pub use model::*;

use reader::{Diags, TableReader};

/// Parses and validates a config held in memory. `file` names the source in error messages;
/// relative paths in it (TLS certificates and keys) are taken from `file`'s folder.
pub fn parse(file: &str, source: &str) -> Result<Config, ConfigError> {
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(source);
    let mut d = Diags::default();
    for e in syntax {
        let span = e.span().unwrap_or(0..0);
        d.error(span, "", format!("TOML syntax: {}", e.message().trim()));
    }
    if !d.list.is_empty() {
        // A broken document can only give misleading "missing key" noise beyond its syntax errors.
        return Err(ConfigError::new(file, source, d.list));
    }
    let root = TableReader::new(doc.get_ref(), doc.span(), "");
    let base = std::path::Path::new(file)
        .parent()
        .unwrap_or(std::path::Path::new(""));
    let config = model::read_config(root, &mut d, source, base);
    validate::validate(&config, &mut d);
    if d.list.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::new(file, source, d.list))
    }
}

/// Reads and validates a config file.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole_file(&name, format!("cannot read file: {e}")))?;
    parse(&name, &source)
}
