//! Where a job of the admin port changes the running config (`SLOTS MIGRATE` publishing `migrating_to`
//! and then the new owner): the config file, or the document item of the configuration-center namespace
//! the proxy follows.
//!
//! Either way the job gives a pure edit of the TOML text (`toml_edit`: comments and layout kept) and a
//! check of the running config, and goes on once this proxy runs the change. With a file: write it (a
//! temporary file renamed over it) and reload. With the center: read the item through the center's API
//! with the proxy's token, put the edited text back with the version read (an edit in between is a
//! conflict, not lost), publish, and wait until the release reached this proxy; every proxy of the
//! namespace applies the same release. A publish releases the namespace's whole draft, so a draft with
//! other unpublished changes is refused rather than released with it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::client::{ApiClient, ClientError};
use router::config::Config;

use crate::proxy::{ConfigSource, Control};

/// How long a published change may take to reach this proxy.
pub const APPLY_WAIT: Duration = Duration::from_secs(15);

/// The source a job edits.
pub enum ConfigStore {
    /// The config file (re-read by the reload).
    File(PathBuf),
    /// The document item `key` of the namespace at `ns_path` (`/v1/apps/../namespaces/NS`).
    Center {
        /// The center's API with the proxy's token (needs `publish` on the namespace).
        api: Arc<ApiClient>,
        /// The namespace's API path.
        ns_path: String,
        /// The document item holding the TOML.
        key: String,
    },
}

impl ConfigStore {
    /// The store of the proxy's config source.
    pub fn of(source: &ConfigSource) -> ConfigStore {
        match source {
            ConfigSource::File(p) => ConfigStore::File(p.clone()),
            ConfigSource::Center {
                api, ns_path, key, ..
            } => ConfigStore::Center {
                api: api.clone(),
                ns_path: ns_path.clone(),
                key: key.clone(),
            },
        }
    }

    /// Refuses before a job starts what its first edit would refuse: unpublished changes in the
    /// namespace. Asked on a thread of its own (the admin port's caller may be on a runtime).
    pub fn check(&self) -> Result<(), String> {
        let ConfigStore::Center { api, ns_path, .. } = self else {
            return Ok(());
        };
        let (api, ns_path) = (api.clone(), ns_path.clone());
        std::thread::spawn(move || runtime()?.block_on(nothing_pending(&api, &ns_path)))
            .join()
            .map_err(|_| "the center check panicked".to_string())?
    }

    /// Applies `edit` to the config's TOML text (`what`: the release message) and returns once this
    /// proxy runs it: the reload's result with a file, `applied` true of the running config with the
    /// center (at most [`APPLY_WAIT`]). Blocks: call it from a job's own thread.
    pub fn edit(
        &self,
        control: &Control,
        what: &str,
        edit: impl FnOnce(&str) -> Result<String, String>,
        applied: impl Fn(&Config) -> bool,
    ) -> Result<(), String> {
        match self {
            ConfigStore::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let edited = edit(&text)?;
                let tmp = path.with_extension("toml.edit-tmp");
                std::fs::write(&tmp, edited).map_err(|e| format!("{}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
                control.reload().map(|_| ())
            }
            ConfigStore::Center { api, ns_path, key } => {
                runtime()?.block_on(publish(api, ns_path, key, what, edit))?;
                let deadline = Instant::now() + APPLY_WAIT;
                while !applied(&control.shared.snapshots.current().config) {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "published `{what}`, but this proxy has not applied it in {} s (is the release rejected? see its report)",
                            APPLY_WAIT.as_secs()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(())
            }
        }
    }
}

fn center(e: ClientError) -> String {
    format!("configuration center: {e}")
}

/// A runtime for the center's API on the calling thread.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for the center's API: {e}"))
}

/// Err naming the namespace's unpublished changes, if it has any.
async fn nothing_pending(api: &ApiClient, ns_path: &str) -> Result<(), String> {
    let diff = api
        .call("GET", &format!("{ns_path}/diff"), None)
        .await
        .map_err(center)?;
    let pending: Vec<String> = ["added", "removed", "changed"]
        .iter()
        .filter_map(|k| diff[*k].as_object())
        .flat_map(|o| o.keys().cloned())
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the namespace has unpublished changes ({}); publish or discard them first: the proxy publishes its own change alone",
        pending.join(", ")
    ))
}

/// Edits the document item `key` and publishes it with message `what`; nothing when the edit changes
/// nothing (a stopped job resumed: the center already has it).
async fn publish(
    api: &ApiClient,
    ns_path: &str,
    key: &str,
    what: &str,
    edit: impl FnOnce(&str) -> Result<String, String>,
) -> Result<(), String> {
    nothing_pending(api, ns_path).await?;
    let item_path = format!("{ns_path}/items/{}", control::client::encode(key));
    let item = api.call("GET", &item_path, None).await.map_err(center)?;
    let text = match (
        &item["value"]["type"],
        item["value"]["value"]["text"].as_str(),
    ) {
        (t, Some(text)) if t == "document" => text.to_string(),
        _ => return Err(format!("the center's item `{key}` is not a TOML document")),
    };
    let edited = edit(&text)?;
    if edited == text {
        return Ok(());
    }
    let body = serde_json::json!({
        "value": {"type": "document", "value": {"format": "toml", "text": edited}},
        "comment": item["comment"].as_str().unwrap_or_default(),
        "version": item["version"],
    });
    api.call("PUT", &item_path, Some(&body))
        .await
        .map_err(center)?;
    let msg = serde_json::json!({ "message": what });
    api.call("POST", &format!("{ns_path}/publish"), Some(&msg))
        .await
        .map_err(center)?;
    Ok(())
}
