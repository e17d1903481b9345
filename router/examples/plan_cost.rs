//! Plans a fixed set of sharded statements many times (instructions per plan under callgrind).
use router::sql::plan::{PlanCache, PlanContext, plan, plan_cached};
use router::sql::shard::ShardingRules;

fn main() {
    let dir = std::env::args().nth(1).expect("router dir");
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let cached = std::env::args().nth(3).is_some();
    let cfg =
        router::config::load(&std::path::Path::new(&dir).join("tests/fixtures/sql/sharding.toml"))
            .expect("cfg");
    let rules = ShardingRules::compile(&cfg.sharding()[0]).expect("rules");
    let stmts = [
        "SELECT id, amount FROM orders WHERE amount > 10 ORDER BY amount DESC, id LIMIT 20",
        "SELECT status, COUNT(*), SUM(amount), AVG(amount) FROM orders WHERE amount > 5 GROUP BY status ORDER BY status",
        "INSERT INTO orders (id, user_id, amount, status) VALUES (1, 3, 1.5, 'new'), (2, 4, 2.5, 'paid'), (3, 9, 3.5, 'it''s')",
        "UPDATE orders SET status = 'paid' WHERE created_at < '2024-01-01'",
        "SELECT o.id, i.sku FROM orders o JOIN order_items i ON o.user_id = i.user_id AND o.id = i.order_id WHERE o.amount > 3",
    ];
    let mut cache = PlanCache::new();
    let mut ids = 0u64;
    let mut total = 0usize;
    for k in 0..n {
        for s in &stmts {
            let mut next_id = || {
                ids += 1;
                ids
            };
            let mut cx = PlanContext {
                rules: &rules,
                params: &[],
                next_id: &mut next_id,
            };
            let sql = s.replace("10", &(10 + k % 7).to_string());
            let p = if cached {
                plan_cached(&sql, &mut cx, &mut cache)
            } else {
                plan(&sql, &mut cx)
            };
            total += usize::from(std::hint::black_box(p).is_ok());
        }
    }
    println!("{total}");
}
