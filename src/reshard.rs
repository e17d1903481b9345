//! `RESHARD ...` on the admin port: online resharding of a MySQL sharded table (docs/sharding.md,
//! "Resharding"). Built so far: `RESHARD PLAN`, the dry run. The new layout is declared in the
//! config file as another table rule of the same `[sharding.NAME]` section (its own physical
//! tables); the plan reads each old partition's size from its server.

use std::sync::Arc;

use proxy_mysql::shard::reshard::{Table, table_stats};
use router::config::Config;
use router::sql::shard::ShardingRules;
use router::sql::shard::reshard::{Layout, PartStats, plan};

use crate::proxy::Control;
use codec::resp::Command;

/// Admin help lines.
pub const HELP: &[&str] = &[
    "RESHARD PLAN <sharding> <table> <new-rule> [RATE bytes/s]  dry run: which partitions move where, rows, bytes, time",
];

/// Copy rate the time estimate assumes when no `RATE` is given (bytes/s).
const ASSUMED_RATE: u64 = 8 << 20;

/// Runs `RESHARD <sub> ...`; the reply is a bulk text or an error line (without `-`).
pub fn command(control: &Arc<Control>, cmd: &Command) -> Result<String, String> {
    let arg = |i: usize| String::from_utf8_lossy(cmd.arg(i).unwrap_or_default()).into_owned();
    let sub = arg(1).to_ascii_uppercase();
    let config = control.shared.snapshots.current().config.clone();
    match sub.as_str() {
        "PLAN" => {
            if cmd.len() < 5 {
                return Err(
                    "usage: RESHARD PLAN <sharding> <table> <new-rule> [RATE bytes/s]".into(),
                );
            }
            let rate = match (cmd.len() > 5).then(|| arg(5).to_ascii_uppercase()) {
                None => ASSUMED_RATE,
                Some(r) if r == "RATE" => arg(6)
                    .parse::<u64>()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("RATE takes bytes per second")?,
                Some(other) => return Err(format!("unexpected argument `{other}`")),
            };
            dry_run(&config, &arg(2), &arg(3), &arg(4), rate)
        }
        "" => Err("RESHARD PLAN is the only subcommand built so far; try HELP".into()),
        _ => Err(format!(
            "RESHARD {sub} is not built yet (docs/sharding.md, \"Resharding\"); RESHARD PLAN is"
        )),
    }
}

fn dry_run(
    config: &Config,
    sharding: &str,
    table: &str,
    new_rule: &str,
    rate: u64,
) -> Result<String, String> {
    let section = config
        .sharding()
        .into_iter()
        .find(|s| s.name == sharding)
        .ok_or_else(|| format!("no [sharding.{sharding}]"))?;
    let rules = ShardingRules::compile(&section).map_err(|e| e.to_string())?;
    let find = |n: &str| {
        rules
            .tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(n))
            .cloned()
            .ok_or_else(|| format!("[sharding.{sharding}] has no sharded table `{n}`"))
    };
    let (old, new) = (find(table)?, find(new_rule)?);
    // Where each old partition is, with its group's login.
    let mut places = Vec::new();
    for p in 0..old.partitions() {
        let shard = &rules.shards[old.shard_of(p)];
        let g = config
            .mysql_group(&shard.group)
            .ok_or_else(|| format!("unknown group `{}`", shard.group))?;
        places.push((
            g.primary.address.clone(),
            g.user.clone(),
            g.password.clone(),
            g.tls.clone(),
            shard.schema.clone(),
            old.physical[p].clone(),
        ));
    }
    // The probe blocks on the network: on a thread of its own with its own runtime.
    let stats = std::thread::spawn(move || -> Result<Vec<PartStats>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut out = Vec::new();
            for (addr, user, password, tls, schema, table) in &places {
                let mut t =
                    Table::open_tls(addr, user, password, tls.as_ref(), schema, table).await?;
                let (rows, bytes) = table_stats(&mut t).await?;
                out.push(PartStats { rows, bytes });
            }
            Ok(out)
        })
    })
    .join()
    .map_err(|_| "the size probe panicked".to_string())??;
    let p = plan(
        Layout {
            rule: &old,
            shards: &rules.shards,
        },
        Layout {
            rule: &new,
            shards: &rules.shards,
        },
        &stats,
        rate,
    )
    .map_err(|e| e.to_string())?;
    let mut text = p.render();
    if rate == ASSUMED_RATE {
        text.push_str("(the rate is an assumption; give RATE bytes/s from a measured copy)\n");
    }
    Ok(text)
}
