//! The node's storage: a `quick_cache` (CLOCK-Pro style) cache bounded by
//! total weighed bytes (key + value + content type + a fixed per-entry
//! overhead), with a per-entry TTL, evictions vs expirations counted
//! separately, and compare-and-set writes. HTTP handlers in
//! [`crate::server`] call it; nothing here knows HTTP.
//!
//! - **Layout.** One entry is ONE allocation (an [`Item`]: header, key,
//!   content type, value); the cache key and the cache value are two
//!   handles on it, so an entry costs the cache slot plus that allocation.
//! - **Byte bound.** quick_cache evicts before it inserts, per shard, so
//!   the bound holds at every instant. The cache is split into shards that
//!   are each large enough for the largest entry the config allows.
//! - **TTL.** Every item carries its expiry instant, in milliseconds of
//!   the store's [`Clock`] (the system clock; a [`ManualClock`] in tests,
//!   which also paces the sweeper). Reads check it (an
//!   expired item is absent and is removed on the spot); writes treat an
//!   expired item as absent; a background sweeper thread walks the cache
//!   incrementally (a bounded number of entries per tick, each step
//!   holding a shard lock for one entry only) and removes expired entries
//!   that are never read again. Each expired entry is counted once, by
//!   whoever removes it.
//! - **Atomic writes.** quick_cache has no per-key compute, so every write
//!   (put, delete, conditional or not) holds one of [`WRITE_STRIPES`]
//!   mutexes chosen by the key's hash while it reads the current version,
//!   checks the condition and writes. Writes to one key are serialized and
//!   a compare-and-set has exactly one winner; reads take no stripe.

use std::hash::{BuildHasher, Hash, Hasher};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quick_cache::{DefaultHashBuilder, Equivalent, Lifecycle, OptionsBuilder, Weighter};
use tracing::warn;

use serde::{Deserialize, Serialize};

use crate::batch::PutResult;
use crate::etag::WriteCondition;

/// Which entries the store drops first when it is full. The store is
/// quick_cache's CLOCK-Pro variant (an S3-FIFO-like pair of queues: new
/// entries enter a probation section, entries read again move to a
/// protected "hot" section); neither value is literally LRU or TinyLFU any
/// more, they choose how big the probation section is. Either way every
/// accepted write is admitted (room is made before it is inserted), so a
/// value you just stored can be read back.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EvictionPolicy {
    /// Recency-leaning: half of the memory is probation, so a new entry
    /// that is never read survives about half a cache's worth of newer
    /// writes (LRU: a whole cache's worth) before it is evicted.
    #[default]
    Lru,
    /// Frequency-leaning (quick_cache's default tuning, 97% hot): a new
    /// entry is evicted after ~3% of a cache's worth of newer writes
    /// unless it is read again, so scans and one-hit wonders cannot push
    /// out the entries that are read repeatedly.
    Tinylfu,
}

/// Bytes charged per entry on top of its key, value and content type: the
/// item header (25 bytes), the `Arc` counts and allocator rounding of the
/// entry's one allocation, and quick_cache's slot (key and value handles,
/// clock state, list links) plus its hash-table bucket. Measured by the
/// bench: 1M items of 11-byte keys and 100-byte values raise RSS by
/// 219 B/item (memcached: 196), i.e. 108 B on top of the 111 bytes of
/// key and value. Keeps `node.memory_limit` close to the memory the store really
/// takes.
pub const ENTRY_OVERHEAD_BYTES: u64 = 108;

/// Mutexes that serialize writes per key (by key hash); a power of two.
pub const WRITE_STRIPES: usize = 256;

/// Most shards the cache is split into (fewer when that is needed for the
/// largest entry to fit into one shard).
const MAX_SHARDS: usize = 64;

/// Weight of a typical entry, used only to size quick_cache's bookkeeping
/// of recently evicted keys ("ghosts", up to half the estimated entry
/// count; ~56 B each, not weighed: at most ~5% of `node.memory_limit`).
const TYPICAL_ENTRY_WEIGHT: u64 = 512;

/// How often the sweeper wakes, and how much of the cache it examines per
/// wake-up: 1/20 of the entries (one pass in about two seconds), at least
/// [`SWEEP_MIN_PER_TICK`] and at most [`SWEEP_MAX_PER_TICK`] (so a very
/// large store costs at most ~200k entry checks a second).
const SWEEP_TICK: Duration = Duration::from_millis(100);
const SWEEP_TICKS_PER_PASS: usize = 20;
const SWEEP_MIN_PER_TICK: usize = 1024;
const SWEEP_MAX_PER_TICK: usize = 20_000;

// Item header: version | expires_at_ms | ttl_seconds | key_len | ct_len.
const VERSION_AT: usize = 0;
const EXPIRES_AT: usize = 8;
const TTL_AT: usize = 16;
const KEY_LEN_AT: usize = 20;
const CT_LEN_AT: usize = 24;
const ITEM_HEADER: usize = 25;

/// A stored entry in ONE shared allocation:
/// `u64 version | u64 expires_at_ms | u32 ttl_seconds | u32 key_len |
/// u8 ct_len | key | content type | value`. Cloning is a reference-count
/// increment.
#[derive(Clone)]
pub struct Item(Arc<[u8]>);

impl Item {
    fn new(version: u64, ttl_seconds: u32, expires_at_ms: u64, key: &[u8], content_type: &[u8], value: &[u8]) -> Item {
        let ct = &content_type[..content_type.len().min(u8::MAX as usize)];
        let len = ITEM_HEADER + key.len() + ct.len() + value.len();
        // Keys are at most 64 KiB by config; a larger one cannot have
        // passed the HTTP layer, but never wrap its length.
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let key = &key[..key_len as usize];
        let mut buf: Arc<[MaybeUninit<u8>]> = Arc::new_uninit_slice(len);
        let dst = Arc::get_mut(&mut buf).expect("a new Arc has one owner");
        let (head, rest) = dst.split_at_mut(ITEM_HEADER);
        fill(&mut head[VERSION_AT..EXPIRES_AT], &version.to_le_bytes());
        fill(&mut head[EXPIRES_AT..TTL_AT], &expires_at_ms.to_le_bytes());
        fill(&mut head[TTL_AT..KEY_LEN_AT], &ttl_seconds.to_le_bytes());
        fill(&mut head[KEY_LEN_AT..CT_LEN_AT], &key_len.to_le_bytes());
        head[CT_LEN_AT].write(ct.len() as u8);
        let (key_dst, rest) = rest.split_at_mut(key.len());
        let (ct_dst, value_dst) = rest.split_at_mut(ct.len());
        fill(key_dst, key);
        fill(ct_dst, ct);
        fill(value_dst, value);
        // SAFETY: every byte of `buf` was written above: the header, the
        // key, the content type and the value exactly cover `len`.
        Item(unsafe { buf.assume_init() })
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap_or_default())
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap_or_default())
    }

    /// The version sent as `ETag`.
    pub fn version(&self) -> u64 {
        self.u64_at(VERSION_AT)
    }

    /// The TTL the value was written with.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.u32_at(TTL_AT).into())
    }

    /// The key it is stored under.
    pub fn key(&self) -> &[u8] {
        &self.0[ITEM_HEADER..ITEM_HEADER + self.u32_at(KEY_LEN_AT) as usize]
    }

    /// The content type it was written with (empty: none given).
    pub fn content_type(&self) -> &[u8] {
        let start = ITEM_HEADER + self.u32_at(KEY_LEN_AT) as usize;
        &self.0[start..start + self.0[CT_LEN_AT] as usize]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        let start = ITEM_HEADER + self.u32_at(KEY_LEN_AT) as usize + self.0[CT_LEN_AT] as usize;
        &self.0[start..]
    }

    /// The value as `Bytes` sharing this item's allocation (no copy).
    pub fn value_bytes(&self) -> Bytes {
        Bytes::from_owner(ItemValue(self.clone()))
    }

    fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.u64_at(EXPIRES_AT)
    }

    /// What the entry is charged against `node.memory_limit`.
    fn weight(&self) -> u64 {
        (self.0.len() - ITEM_HEADER) as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// How long a written entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// This long from now.
    After(Duration),
    /// As long as the entry it replaces had left (`SET ... KEEPTTL`);
    /// `otherwise` when there is none.
    Keep { otherwise: Duration },
}

/// Why [`Store::incr`] changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IncrError {
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    #[error("increment or decrement would overflow")]
    Overflow,
}

/// A stored value as a signed 64-bit integer, as Redis reads one: decimal,
/// an optional `-`, no spaces, no `+`, no leading zeros.
pub fn parse_integer(value: &[u8]) -> Option<i64> {
    if value.is_empty() || value.len() > 20 {
        return None;
    }
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || (digits.len() > 1 && digits[0] == b'0') || value == b"-0" {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn expires_after(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add((ttl.as_millis() as u64).max(1))
}

/// The whole seconds (at least 1) from `now_ms` to `expires_at`, as an
/// item records its TTL.
fn ttl_seconds_until(now_ms: u64, expires_at: u64) -> u32 {
    expires_at.saturating_sub(now_ms).div_ceil(1000).clamp(1, u64::from(u32::MAX)) as u32
}

fn fill(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(*s);
    }
}

struct ItemValue(Item);

impl AsRef<[u8]> for ItemValue {
    fn as_ref(&self) -> &[u8] {
        self.0.value()
    }
}

/// The cache key: a second handle on the item, hashing and comparing as
/// the item's key bytes.
#[derive(Clone)]
struct ItemKey(Item);

impl Hash for ItemKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key().hash(state)
    }
}

impl PartialEq for ItemKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for ItemKey {}

/// A lookup by plain key bytes (hashes exactly like [`ItemKey`]).
#[derive(Hash)]
struct KeyQuery<'a>(&'a [u8]);

impl Equivalent<ItemKey> for KeyQuery<'_> {
    fn equivalent(&self, key: &ItemKey) -> bool {
        self.0 == key.0.key()
    }
}

#[derive(Clone)]
struct ItemWeight;

impl Weighter<ItemKey, Item> for ItemWeight {
    fn weight(&self, _key: &ItemKey, item: &Item) -> u64 {
        item.weight()
    }
}

/// Where a store reads the time for TTLs: milliseconds since the store was
/// created (expiry instants are relative to it, so they fit a u64 and need
/// no wall clock). [`Clock::system`] is the monotonic clock every node
/// uses; [`Clock::manual`] is a clock that moves only when a test calls
/// [`ManualClock::advance`], so TTL tests neither sleep nor race. An enum,
/// not a trait object: a read (one per GET) is a predictable branch and an
/// `Instant::elapsed`, as before, with no dynamic call and no lock.
#[derive(Clone)]
pub struct Clock(ClockKind);

#[derive(Clone)]
enum ClockKind {
    System(Instant),
    Manual(ManualClock),
}

impl Clock {
    /// The monotonic system clock, starting now.
    pub fn system() -> Clock {
        Clock(ClockKind::System(Instant::now()))
    }

    /// A clock that reads what `manual` says.
    pub fn manual(manual: &ManualClock) -> Clock {
        Clock(ClockKind::Manual(manual.clone()))
    }

    #[inline]
    fn now_ms(&self) -> u64 {
        match &self.0 {
            ClockKind::System(start) => start.elapsed().as_millis() as u64,
            ClockKind::Manual(manual) => manual.now_ms(),
        }
    }

    /// Blocks the calling thread until this clock reads at least
    /// `deadline_ms`, or until it is unparked (callers re-check both).
    fn park_until(&self, deadline_ms: u64) {
        match &self.0 {
            ClockKind::System(_) => std::thread::park_timeout(Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()))),
            // Woken by `ManualClock::advance` (or by the store's drop).
            ClockKind::Manual(_) => std::thread::park(),
        }
    }
}

/// A test clock shared by clones: starts at 0 ms and moves only by
/// [`ManualClock::advance`], which also wakes the sweeper of every store
/// reading it (the sweeper ticks every 100 ms of this clock's time).
#[derive(Clone, Default)]
pub struct ManualClock(Arc<ManualClockInner>);

#[derive(Default)]
struct ManualClockInner {
    now_ms: AtomicU64,
    sweepers: Mutex<Vec<std::thread::Thread>>,
}

impl ManualClock {
    /// A clock at 0 ms.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by` (whole milliseconds) and wakes the
    /// sweepers.
    pub fn advance(&self, by: Duration) {
        self.0.now_ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        for sweeper in self.sweepers().iter() {
            sweeper.unpark();
        }
    }

    fn now_ms(&self) -> u64 {
        self.0.now_ms.load(Ordering::SeqCst)
    }

    fn sweepers(&self) -> MutexGuard<'_, Vec<std::thread::Thread>> {
        self.0.sweepers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts what quick_cache removes on its own: an expired item as an
/// expiration, the item a write replaced as nothing, anything else as an
/// eviction (to stay within `node.memory_limit`).
#[derive(Clone)]
struct RemovalCounter {
    evictions: Counter,
    expirations: Counter,
    clock: Clock,
}

/// Per-operation state of [`RemovalCounter`]: which version the write
/// replaces, and up to two removed items to free after the shard lock is
/// released.
#[derive(Default)]
struct Removals {
    replaced_version: Option<u64>,
    release: [Option<Item>; 2],
}

impl Lifecycle<ItemKey, Item> for RemovalCounter {
    type RequestState = Removals;

    fn on_evict(&self, state: &mut Removals, key: ItemKey, item: Item) {
        drop(key);
        if item.expired(self.clock.now_ms()) {
            self.expirations.inc();
        } else if state.replaced_version == Some(item.version()) {
            // quick_cache reports the value an insert overwrote as evicted.
            state.replaced_version = None;
        } else {
            self.evictions.inc();
        }
        if let Some(slot) = state.release.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(item);
        }
    }
}

type ItemCache = quick_cache::sync::Cache<ItemKey, Item, ItemWeight, DefaultHashBuilder, RemovalCounter>;

/// Result of a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteResult {
    Deleted,
    NotFound,
    ConditionFailed,
}

/// How the cache is cut into shards (each shard has its own lock and an
/// equal share of the byte bound).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layout {
    shards: usize,
    shard_capacity: u64,
    /// quick_cache's `hot_allocation`: the share of a shard reserved for
    /// entries that were read again; also the largest entry it admits.
    hot_allocation: f64,
}

/// quick_cache's hot section per eviction policy. `tinylfu`: the library
/// default, strongly frequency-biased (a new entry sits in a 3% probation
/// section and is evicted first unless it is read again). `lru`: a 50%
/// probation section, so a fresh unread entry survives about half a
/// cache's worth of newer writes (true LRU: a whole cache's worth).
fn hot_allocation(policy: EvictionPolicy) -> f64 {
    match policy {
        EvictionPolicy::Lru => 0.5,
        EvictionPolicy::Tinylfu => 0.97,
    }
}

fn layout(memory_limit: u64, largest_entry: u64, policy: EvictionPolicy, max_shards: usize) -> Layout {
    let policy_hot = hot_allocation(policy);
    let largest = largest_entry.clamp(1, memory_limit.max(1));
    let admits = |capacity: u64, hot: f64| (capacity as f64 * hot) as u64 >= largest;
    let mut shards = max_shards.max(1).next_power_of_two();
    while shards > 1 && !admits(memory_limit / shards as u64, policy_hot) {
        shards /= 2;
    }
    let shard_capacity = memory_limit / shards as u64;
    // One shard that is too small for the policy's hot section: make all
    // of it hot, or the largest entry would be refused.
    let hot_allocation = if admits(shard_capacity, policy_hot) { policy_hot } else { 1.0 };
    Layout { shards, shard_capacity, hot_allocation }
}

/// What the store and its sweeper thread share.
struct StoreShared {
    cache: ItemCache,
    clock: Clock,
    stripes: Box<[Mutex<()>]>,
    stripe_hasher: DefaultHashBuilder,
    memory_limit: u64,
    next_version: AtomicU64,
    expirations: Counter,
    stop: AtomicBool,
}

impl StoreShared {
    /// Serializes writes to `key` (and to the keys sharing its stripe).
    fn lock_key(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let stripe = self.stripe_hasher.hash_one(key) as usize & (WRITE_STRIPES - 1);
        // A poisoned stripe guards no data: keep using it.
        self.stripes[stripe].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live item under `key` (no hit recorded); an expired one is
    /// removed and counted.
    fn live(&self, key: &[u8], now_ms: u64) -> Option<Item> {
        let item = self.cache.peek(&KeyQuery(key))?;
        if item.expired(now_ms) {
            self.remove_expired(&item);
            return None;
        }
        Some(item)
    }

    /// Removes `item` if it is still the stored version, counting one
    /// expiration (only the caller that actually removes it counts).
    fn remove_expired(&self, item: &Item) {
        let version = item.version();
        if self.cache.remove_if(&KeyQuery(item.key()), |current| current.version() == version).is_some() {
            self.expirations.inc();
        }
    }

    /// Walks the cache a bounded step per tick (every [`SWEEP_TICK`] of
    /// the store's clock) until told to stop.
    fn sweep_until_stopped(&self) {
        let manual = match &self.clock.0 {
            ClockKind::Manual(manual) => {
                // Registered before the first read of the clock: no advance
                // can be missed.
                manual.sweepers().push(std::thread::current());
                Some(manual)
            }
            ClockKind::System(_) => None,
        };
        let tick = SWEEP_TICK.as_millis() as u64;
        let mut pass = self.cache.iter();
        let mut next_tick = self.clock.now_ms().saturating_add(tick);
        loop {
            self.clock.park_until(next_tick);
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let now = self.clock.now_ms();
            if now < next_tick {
                continue;
            }
            next_tick = now.saturating_add(tick);
            let budget = (self.cache.len() / SWEEP_TICKS_PER_PASS).clamp(SWEEP_MIN_PER_TICK, SWEEP_MAX_PER_TICK);
            for _ in 0..budget {
                match pass.next() {
                    Some((_, item)) if item.expired(now) => self.remove_expired(&item),
                    Some(_) => {}
                    None => {
                        pass = self.cache.iter();
                        break;
                    }
                }
            }
        }
        if let Some(manual) = manual {
            let me = std::thread::current().id();
            manual.sweepers().retain(|t| t.id() != me);
        }
    }
}

/// The byte-bounded, TTL-aware store of one node. Dropping it stops its
/// sweeper thread.
pub struct Store {
    shared: Arc<StoreShared>,
    sweeper: Option<JoinHandle<()>>,
}

impl Store {
    /// A store of at most `memory_limit` weighed bytes in which any entry
    /// up to `memory_limit` fits (one shard: use
    /// [`Store::with_largest_entry`] to allow concurrent shards). Size
    /// evictions and TTL expirations are counted into the given counters.
    pub fn new(memory_limit: u64, policy: EvictionPolicy, evictions: Counter, expirations: Counter) -> Store {
        Store::with_largest_entry(memory_limit, memory_limit, policy, evictions, expirations)
    }

    /// A store of at most `memory_limit` weighed bytes, split into as many
    /// shards (up to 4 per core) as keep every entry of up to
    /// `largest_entry` weighed bytes admissible (see
    /// [`crate::NodeConfig::largest_entry`]). A heavier entry is dropped as
    /// soon as it is written and counted as an eviction.
    pub fn with_largest_entry(
        memory_limit: u64,
        largest_entry: u64,
        policy: EvictionPolicy,
        evictions: Counter,
        expirations: Counter,
    ) -> Store {
        Store::with_clock(memory_limit, largest_entry, policy, evictions, expirations, Clock::system())
    }

    /// [`Store::with_largest_entry`] reading the time from `clock` (tests
    /// pass [`Clock::manual`]; nodes use [`Clock::system`]).
    pub fn with_clock(
        memory_limit: u64,
        largest_entry: u64,
        policy: EvictionPolicy,
        evictions: Counter,
        expirations: Counter,
        clock: Clock,
    ) -> Store {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Store::build(layout(memory_limit, largest_entry, policy, (cores * 4).min(MAX_SHARDS)), memory_limit, evictions, expirations, clock)
    }

    fn build(layout: Layout, memory_limit: u64, evictions: Counter, expirations: Counter, clock: Clock) -> Store {
        let estimated_items = (memory_limit / TYPICAL_ENTRY_WEIGHT).max(32) as usize;
        let options = OptionsBuilder::new()
            .shards(layout.shards)
            .estimated_items_capacity(estimated_items)
            .weight_capacity(layout.shard_capacity * layout.shards as u64)
            .hot_allocation(layout.hot_allocation)
            .build()
            .expect("weight and item capacity are both set");
        let cache = ItemCache::with_options(
            options,
            ItemWeight,
            DefaultHashBuilder::default(),
            RemovalCounter { evictions, expirations: expirations.clone(), clock: clock.clone() },
        );
        // Versions only need to be unique per key across restarts of this
        // node: start from the clock.
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let shared = Arc::new(StoreShared {
            cache,
            clock,
            stripes: (0..WRITE_STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: DefaultHashBuilder::default(),
            memory_limit,
            next_version: AtomicU64::new(seed),
            expirations,
            stop: AtomicBool::new(false),
        });
        let sweeper_shared = shared.clone();
        let sweeper = std::thread::Builder::new()
            .name("node-expiry-sweep".into())
            .spawn(move || sweeper_shared.sweep_until_stopped())
            .map_err(|error| {
                warn!(%error, "cannot start the expiry sweeper; expired entries are removed only when read or evicted");
            })
            .ok();
        Store { shared, sweeper }
    }

    /// The live (unexpired) item under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Item> {
        let shared = &*self.shared;
        let item = shared.cache.get(&KeyQuery(key))?;
        if item.expired(shared.clock.now_ms()) {
            shared.remove_expired(&item);
            return None;
        }
        Some(item)
    }

    /// Stores `value` under `key` if `condition` allows, with a new version.
    pub fn put(&self, key: &[u8], content_type: &[u8], value: &[u8], ttl: Duration, condition: &WriteCondition) -> PutResult {
        self.put_with(key, content_type, value, Expiry::After(ttl), condition).0
    }

    /// [`Store::put`] with the expiry chosen by `expiry` (a TTL, or the
    /// replaced entry's own remaining time); also answers the live entry it
    /// replaced (or that refused the condition), for `SET ... GET`.
    pub fn put_with(
        &self,
        key: &[u8],
        content_type: &[u8],
        value: &[u8],
        expiry: Expiry,
        condition: &WriteCondition,
    ) -> (PutResult, Option<Item>) {
        let shared = &*self.shared;
        let version = shared.next_version.fetch_add(1, Ordering::Relaxed);
        let serial = shared.lock_key(key);
        let now = shared.clock.now_ms();
        let old = shared.live(key, now);
        let current = old.as_ref().map(Item::version);
        if !condition.allows(current) {
            return (PutResult::ConditionFailed, old);
        }
        let expires_at = match (expiry, &old) {
            (Expiry::Keep { .. }, Some(old)) => old.u64_at(EXPIRES_AT),
            (Expiry::After(ttl) | Expiry::Keep { otherwise: ttl }, _) => expires_after(now, ttl),
        };
        let item = Item::new(version, ttl_seconds_until(now, expires_at), expires_at, key, content_type, value);
        let mut removals = Removals { replaced_version: current, ..Removals::default() };
        shared.cache.insert_with_lifecycle(ItemKey(item.clone()), item, &mut removals);
        drop(serial);
        drop(removals);
        let result = match current {
            Some(_) => PutResult::Replaced { version },
            None => PutResult::Created { version },
        };
        (result, old)
    }

    /// Time `item` has left to live (zero once expired).
    pub fn remaining(&self, item: &Item) -> Duration {
        Duration::from_millis(item.u64_at(EXPIRES_AT).saturating_sub(self.shared.clock.now_ms()))
    }

    /// Removes `key` if `condition` allows.
    pub fn delete(&self, key: &[u8], condition: &WriteCondition) -> DeleteResult {
        self.delete_with(key, condition).0
    }

    /// [`Store::delete`], also answering the entry removed (for `GETDEL`).
    pub fn delete_with(&self, key: &[u8], condition: &WriteCondition) -> (DeleteResult, Option<Item>) {
        let shared = &*self.shared;
        let _serial = shared.lock_key(key);
        let Some(current) = shared.live(key, shared.clock.now_ms()) else {
            return (DeleteResult::NotFound, None);
        };
        let version = current.version();
        if !condition.allows(Some(version)) {
            return (DeleteResult::ConditionFailed, None);
        }
        match shared.cache.remove_if(&KeyQuery(key), |item| item.version() == version) {
            Some(_) => (DeleteResult::Deleted, Some(current)),
            // Evicted between the check and the removal.
            None => (DeleteResult::NotFound, None),
        }
    }

    /// Gives the live entry under `key` a new time to live (`EXPIRE`,
    /// `PERSIST`, `GETEX`); value and version stay. `None`: no such entry.
    pub fn touch(&self, key: &[u8], ttl: Duration) -> Option<Item> {
        let shared = &*self.shared;
        let _serial = shared.lock_key(key);
        let now = shared.clock.now_ms();
        let old = shared.live(key, now)?;
        let expires_at = expires_after(now, ttl);
        let item = Item::new(old.version(), ttl_seconds_until(now, expires_at), expires_at, key, old.content_type(), old.value());
        let mut removals = Removals { replaced_version: Some(old.version()), ..Removals::default() };
        shared.cache.insert_with_lifecycle(ItemKey(item.clone()), item.clone(), &mut removals);
        Some(item)
    }

    /// Adds `by` to the decimal integer stored under `key`, atomically (the
    /// key's write stripe is held from the read to the write): an absent
    /// key counts as 0 and is created with `ttl`; an existing one keeps its
    /// expiry and content type. Answers the new value and entry.
    pub fn incr(&self, key: &[u8], by: i64, ttl: Duration) -> Result<(i64, Item), IncrError> {
        let shared = &*self.shared;
        let version = shared.next_version.fetch_add(1, Ordering::Relaxed);
        let _serial = shared.lock_key(key);
        let now = shared.clock.now_ms();
        let old = shared.live(key, now);
        let (current, expires_at, content_type) = match &old {
            Some(old) => (parse_integer(old.value()).ok_or(IncrError::NotAnInteger)?, old.u64_at(EXPIRES_AT), old.content_type()),
            None => (0, expires_after(now, ttl), &b""[..]),
        };
        let next = current.checked_add(by).ok_or(IncrError::Overflow)?;
        let text = next.to_string();
        let item = Item::new(version, ttl_seconds_until(now, expires_at), expires_at, key, content_type, text.as_bytes());
        let mut removals = Removals { replaced_version: old.as_ref().map(Item::version), ..Removals::default() };
        shared.cache.insert_with_lifecycle(ItemKey(item.clone()), item.clone(), &mut removals);
        Ok((next, item))
    }

    /// Removes every expired entry now, in one full pass (the sweeper does
    /// the same incrementally in the background; entry count and weight
    /// are always exact, this only makes them exclude expired entries).
    pub fn run_pending_tasks(&self) {
        let shared = &*self.shared;
        let now = shared.clock.now_ms();
        for (_, item) in shared.cache.iter() {
            if item.expired(now) {
                shared.remove_expired(&item);
            }
        }
    }

    /// Entries held.
    pub fn entry_count(&self) -> u64 {
        self.shared.cache.len() as u64
    }

    /// Weighed bytes held.
    pub fn weighted_size(&self) -> u64 {
        self.shared.cache.weight()
    }

    /// `node.memory_limit` in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.shared.memory_limit
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.thread().unpark();
            let _ = sweeper.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn store(limit: u64) -> (Store, Counter, Counter) {
        let (ev, ex) = (Counter::default(), Counter::default());
        (Store::new(limit, EvictionPolicy::Lru, ev.clone(), ex.clone()), ev, ex)
    }

    /// A single-shard store (deterministic eviction order).
    fn one_shard(limit: u64, largest: u64, policy: EvictionPolicy) -> (Store, Counter, Counter) {
        let (ev, ex) = (Counter::default(), Counter::default());
        let store = Store::build(layout(limit, largest, policy, 1), limit, ev.clone(), ex.clone(), Clock::system());
        (store, ev, ex)
    }

    fn poll_until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn item_layout_round_trips() {
        let item = Item::new(42, 7, 99, b"the key", b"text/plain", b"hello");
        assert_eq!(item.version(), 42);
        assert_eq!(item.ttl(), Duration::from_secs(7));
        assert_eq!(item.key(), b"the key");
        assert_eq!(item.content_type(), b"text/plain");
        assert_eq!(item.value(), b"hello");
        assert_eq!(&item.value_bytes()[..], b"hello");
        assert!(!item.expired(98));
        assert!(item.expired(99));
        assert_eq!(item.weight(), 7 + 10 + 5 + ENTRY_OVERHEAD_BYTES);
        let empty = Item::new(1, 1, 0, b"", b"", b"");
        assert_eq!(empty.key(), b"");
        assert_eq!(empty.content_type(), b"");
        assert_eq!(empty.value(), b"");
        let long_ct = vec![b'c'; 300];
        let truncated = Item::new(1, 1, 0, b"k", &long_ct, b"v");
        assert_eq!(truncated.content_type().len(), 255);
        assert_eq!(truncated.value(), b"v");
    }

    #[test]
    fn keys_compare_as_bytes() {
        let long = vec![7u8; 100];
        let (s, _, _) = store(1 << 20);
        let keys: [&[u8]; 5] = [b"", b"short", &long, b"ab", b"ab\0"];
        for key in keys {
            s.put(key, b"", key, HOUR, &WriteCondition::Always);
        }
        for key in keys {
            assert_eq!(s.get(key).unwrap().value(), key);
        }
        assert_eq!(s.entry_count(), 5);
    }

    #[test]
    fn conditional_writes() {
        let (s, _, _) = store(1 << 20);
        let ttl = Duration::from_secs(60);
        assert_eq!(s.put(b"k", b"", b"x", ttl, &WriteCondition::IfPresent), PutResult::ConditionFailed);
        let PutResult::Created { version: v1 } = s.put(b"k", b"", b"1", ttl, &WriteCondition::IfAbsent) else { panic!() };
        assert_eq!(s.put(b"k", b"", b"2", ttl, &WriteCondition::IfAbsent), PutResult::ConditionFailed);
        let PutResult::Replaced { version: v2 } = s.put(b"k", b"", b"2", ttl, &WriteCondition::IfVersionIn(vec![v1])) else { panic!() };
        assert_ne!(v1, v2);
        assert_eq!(s.put(b"k", b"", b"3", ttl, &WriteCondition::IfVersionIn(vec![v1])), PutResult::ConditionFailed);
        assert_eq!(s.get(b"k").unwrap().value(), b"2");
        assert_eq!(s.delete(b"k", &WriteCondition::IfVersionIn(vec![v1])), DeleteResult::ConditionFailed);
        assert_eq!(s.delete(b"k", &WriteCondition::IfVersionIn(vec![v2])), DeleteResult::Deleted);
        assert_eq!(s.delete(b"k", &WriteCondition::Always), DeleteResult::NotFound);
    }

    /// The bound holds after every single write (quick_cache evicts before
    /// it inserts), and every dropped entry is counted as an eviction.
    #[test]
    fn byte_bound_holds_under_a_flood() {
        let limit = 1 << 20;
        let (s, evictions, expirations) = store(limit);
        let value = vec![1u8; 10_000];
        for i in 0..1000u32 {
            s.put(&i.to_be_bytes(), b"", &value, HOUR, &WriteCondition::Always);
            assert!(s.weighted_size() <= limit, "{}", s.weighted_size());
        }
        assert!(s.entry_count() <= limit / 10_000);
        assert!(s.entry_count() >= limit / 10_000 / 2, "{}", s.entry_count());
        assert_eq!(evictions.get() + s.entry_count(), 1000);
        assert_eq!(expirations.get(), 0);
    }

    /// Overwriting a key is not an eviction, even though quick_cache
    /// reports the old value through its eviction hook.
    #[test]
    fn overwrites_are_not_counted_as_evictions() {
        let (s, evictions, expirations) = store(1 << 20);
        for i in 0..100u32 {
            s.put(b"same", b"", &i.to_le_bytes(), HOUR, &WriteCondition::Always);
        }
        assert_eq!((evictions.get(), expirations.get()), (0, 0));
        assert_eq!(s.entry_count(), 1);
        assert_eq!(s.get(b"same").unwrap().value(), 99u32.to_le_bytes());
    }

    /// With the config's largest entry, the store is sharded and still
    /// admits that entry (and keeps the bound).
    #[test]
    fn largest_entry_fits_a_sharded_store() {
        let limit = 4 << 20;
        let largest = (256 << 10) + 1024 + 255 + ENTRY_OVERHEAD_BYTES;
        let l = layout(limit, largest, EvictionPolicy::Lru, 64);
        assert!(l.shards > 1, "{l:?}");
        assert!((l.shard_capacity as f64 * l.hot_allocation) as u64 >= largest, "{l:?}");
        assert!(l.shard_capacity * l.shards as u64 <= limit);
        // Only one shard fits: it gets all of it.
        let l = layout(largest, largest, EvictionPolicy::Lru, 64);
        assert_eq!((l.shards, l.hot_allocation), (1, 1.0));

        let (ev, ex) = (Counter::default(), Counter::default());
        let s = Store::with_largest_entry(limit, largest, EvictionPolicy::Lru, ev.clone(), ex);
        let value = vec![3u8; 256 << 10];
        let key = vec![b'k'; 1024];
        let ct = vec![b'c'; 255];
        s.put(&key, &ct, &value, HOUR, &WriteCondition::Always);
        assert_eq!(s.get(&key).unwrap().value().len(), 256 << 10);
        assert_eq!(ev.get(), 0);
        assert!(s.weighted_size() <= limit);
    }

    /// `lru` keeps a fresh, unread entry through a quarter of a cache's
    /// worth of newer writes; `tinylfu` (3% probation) does not.
    #[test]
    fn eviction_policy_changes_how_long_unread_entries_survive() {
        let survives = |policy| {
            let entry = 1000 + 2 + ENTRY_OVERHEAD_BYTES;
            let (s, evictions, _) = one_shard(200 * entry, entry, policy);
            let value = vec![0u8; 1000];
            for i in 0..200u16 {
                s.put(&i.to_be_bytes(), b"", &value, HOUR, &WriteCondition::Always);
            }
            s.put(b"fresh", b"", &value[..997], HOUR, &WriteCondition::Always);
            for i in 1000..1050u16 {
                s.put(&i.to_be_bytes(), b"", &value, HOUR, &WriteCondition::Always);
            }
            assert!(evictions.get() >= 50);
            // `peek`: a `get` would mark it as read.
            s.shared.cache.peek(&KeyQuery(b"fresh")).is_some()
        };
        assert!(survives(EvictionPolicy::Lru));
        assert!(!survives(EvictionPolicy::Tinylfu));
    }

    /// Expired entries are absent for reads and conditional writes, and
    /// each is counted once as an expiration (not an eviction).
    #[test]
    fn expired_entries_are_absent_and_counted_once() {
        let (s, evictions, expirations) = store(1 << 20);
        let shared = &s.shared;
        // Written with an expiry in the past (the clock is in ms).
        let expired = |key: &[u8], version| {
            let item = Item::new(version, 1, 0, key, b"", b"old");
            shared.cache.insert(ItemKey(item.clone()), item);
        };
        expired(b"read", 1);
        assert!(s.get(b"read").is_none());
        assert!(s.get(b"read").is_none());
        assert_eq!(expirations.get(), 1);

        expired(b"added", 2);
        assert!(matches!(s.put(b"added", b"", b"new", HOUR, &WriteCondition::IfAbsent), PutResult::Created { .. }));
        assert_eq!(expirations.get(), 2);
        assert_eq!(s.get(b"added").unwrap().value(), b"new");

        expired(b"cas", 3);
        assert_eq!(s.put(b"cas", b"", b"x", HOUR, &WriteCondition::IfVersionIn(vec![3])), PutResult::ConditionFailed);
        assert_eq!(s.delete(b"cas", &WriteCondition::Always), DeleteResult::NotFound);
        assert_eq!(expirations.get(), 3);

        expired(b"swept", 4);
        s.run_pending_tasks();
        assert_eq!(expirations.get(), 4);
        assert_eq!(s.entry_count(), 1);
        assert_eq!(evictions.get(), 0);
    }

    /// A store on a [`ManualClock`].
    fn manual_store(limit: u64) -> (Store, ManualClock, Counter, Counter) {
        let (ev, ex, clock) = (Counter::default(), Counter::default(), ManualClock::new());
        let s = Store::with_clock(limit, limit, EvictionPolicy::Lru, ev.clone(), ex.clone(), Clock::manual(&clock));
        (s, clock, ev, ex)
    }

    /// A TTL ends exactly when the store's clock reaches it: a read 1 ms
    /// before sees the value, a read at the instant does not.
    #[test]
    fn ttl_ends_when_the_clock_reaches_it() {
        let (s, clock, evictions, expirations) = manual_store(1 << 20);
        s.put(b"k", b"", b"v", Duration::from_secs(2), &WriteCondition::Always);
        clock.advance(Duration::from_millis(1999));
        assert_eq!(s.get(b"k").unwrap().value(), b"v");
        clock.advance(Duration::from_millis(1));
        assert!(s.get(b"k").is_none());
        assert_eq!((evictions.get(), expirations.get()), (0, 1));
    }

    /// The sweeper removes an entry nobody reads again once its TTL passed;
    /// it ticks on the store's clock, so the test advances that clock a
    /// tick at a time and only waits for the sweeper thread to run.
    #[test]
    fn sweeper_removes_unread_expired_entries() {
        let (s, clock, evictions, expirations) = manual_store(1 << 20);
        s.put(b"short", b"", b"v", Duration::from_secs(1), &WriteCondition::Always);
        s.put(b"long", b"", b"v", HOUR, &WriteCondition::Always);
        clock.advance(Duration::from_secs(1));
        poll_until("the sweeper to expire `short`", || {
            clock.advance(SWEEP_TICK);
            expirations.get() == 1
        });
        assert_eq!(s.entry_count(), 1);
        assert!(s.get(b"long").is_some());
        assert_eq!(evictions.get(), 0);
    }

    /// A store on a manual clock whose time never moves never sweeps, and
    /// its drop still stops the sweeper promptly.
    #[test]
    fn sweeper_waits_for_the_manual_clock() {
        let (s, clock, _, expirations) = manual_store(1 << 20);
        let item = Item::new(1, 1, 0, b"stale", b"", b"old");
        s.shared.cache.insert(ItemKey(item.clone()), item);
        std::thread::sleep(SWEEP_TICK * 3);
        assert_eq!((s.entry_count(), expirations.get()), (1, 0));
        drop(s);
        assert!(clock.sweepers().is_empty());
    }

    /// Threads released together by a barrier compare-and-set from the
    /// same version, many rounds: exactly one wins each round, and the
    /// stored value is the winner's. (Without the write stripes this failed
    /// in round 31 of a run on 2 cores.)
    #[test]
    fn cas_race_has_exactly_one_winner() {
        let (s, _, _) = store(1 << 20);
        let racers = 4;
        let barrier = std::sync::Barrier::new(racers);
        for round in 0..2000u32 {
            let (PutResult::Created { version } | PutResult::Replaced { version }) =
                s.put(b"k", b"", b"base", HOUR, &WriteCondition::Always)
            else {
                panic!()
            };
            let winners: Vec<u64> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..racers as u64)
                    .map(|racer| {
                        let (s, barrier) = (&s, &barrier);
                        scope.spawn(move || {
                            barrier.wait();
                            let condition = WriteCondition::IfVersionIn(vec![version]);
                            let won = s.put(b"k", b"", &racer.to_le_bytes(), HOUR, &condition) != PutResult::ConditionFailed;
                            won.then_some(racer)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
            });
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert_eq!(s.get(b"k").unwrap().value(), winners[0].to_le_bytes());
        }
    }
}
