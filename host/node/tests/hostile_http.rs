//! The key-API conformance suite (`shardgate_testkit::key_api`) against a
//! real node on 127.0.0.1:0 whose TTLs follow a manual clock, so expiry is
//! checked without sleeping: CRUD, conditions and the compare-and-set race,
//! TTL queries and expiry, limits naming `node.max_*`, batches, and the
//! hostile property checks (random bytes, mangled requests, random
//! percent-encoded keys and values, random conditional headers, damaged
//! batches) with a canary that must survive every case.
//!
//! Small limits (`key_api::small_node_config`), so random input reaches
//! them. Case counts are small so `cargo test` stays quick; raise them with
//! `PROPTEST_CASES=2000 cargo test -p shardgate-node --test hostile_http`
//! (and vary the inputs with `PROPTEST_RNG_SEED`).

use shardgate_node::store::{Clock, ManualClock};
use shardgate_testkit::TestNode;
use shardgate_testkit::key_api::{self, Suite, Target, small_node_config as config};

#[test]
fn the_node_conforms_to_the_key_api() {
    let runtime = key_api::runtime();
    let clock = ManualClock::new();
    let node = runtime.block_on(TestNode::start_with_clock(config(), Clock::manual(&clock)));
    let target = Target::new(node.url.clone(), config().limits()).with_clock(clock);
    Suite::new(runtime.handle().clone(), target).run_all();
    runtime.block_on(node.stop());
}
