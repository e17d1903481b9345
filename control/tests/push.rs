//! Push fan-out: one publish wakes every watcher, none misses it. Latencies are printed, not asserted.

mod common;

use common::*;

#[test]
fn a_publish_reaches_every_watcher() {
    // fan_out asserts that every watcher received exactly the published release.
    let lat = fan_out(300, || Box::new(|| {}));
    assert_eq!(lat.len(), 300);
}
