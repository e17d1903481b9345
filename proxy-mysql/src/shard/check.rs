//! The shards' schemas checked on their servers (`furrow check-config --connect`): a shard whose
//! schema is missing on its group's primary would fail every statement that reaches it.

use std::rc::Rc;

use router::config::Config;

/// Asks each shard's group primary whether the shard's schema exists; returns one problem line
/// per shard whose schema is missing or whose server could not be asked (empty: all present).
pub async fn check_shard_schemas(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for s in config.sharding() {
        for shard in &s.shards {
            let Some(g) = config.mysql_group(&shard.group) else {
                problems.push(format!(
                    "sharding `{}`: shard `{}`: unknown group `{}`",
                    s.name, shard.name, shard.group
                ));
                continue;
            };
            let p = &g.primary;
            let mut conn = match crate::backend::BackendConn::connect(
                Rc::from(p.name.as_str()),
                Rc::from(p.address.as_str()),
                &g.user,
                &g.password,
                g.connect_timeout,
                g.tls.as_ref(),
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!(
                        "sharding `{}`: shard `{}`: cannot connect to `{}` ({}): {}",
                        s.name,
                        shard.name,
                        p.name,
                        p.address,
                        e.into_reason()
                    ));
                    continue;
                }
            };
            let sql = format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'",
                shard.schema.replace('\\', "\\\\").replace('\'', "''")
            );
            match conn.query_rows(&sql).await {
                Ok((_, rows)) if rows.is_empty() => problems.push(format!(
                    "sharding `{}`: shard `{}`: schema `{}` does not exist on `{}` ({}) \
                     (create it there: CREATE DATABASE `{}`)",
                    s.name, shard.name, shard.schema, p.name, p.address, shard.schema
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!(
                    "sharding `{}`: shard `{}`: cannot check schema `{}` on `{}`: {}",
                    s.name,
                    shard.name,
                    shard.schema,
                    p.name,
                    e.into_reason()
                )),
            }
        }
    }
    problems
}
