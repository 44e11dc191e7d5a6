//! The node's storage: a moka cache bounded by total bytes (keys + values +
//! content types + a fixed per-entry overhead, via moka's weigher), with a
//! per-entry TTL (moka's `Expiry`), LRU or TinyLFU eviction, and evictions
//! vs expirations counted from the eviction listener's `RemovalCause`.
//! HTTP handlers in [`crate::server`] call it; nothing here knows HTTP.
//!
//! Every write (put, delete, conditional or not) goes through moka's
//! per-key `and_compute_with`, so writes to one key are serialized and a
//! compare-and-set has exactly one winner.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use prometheus_client::metrics::counter::Counter;

use crate::batch::PutResult;
use crate::config::EvictionPolicy;
use crate::etag::WriteCondition;

/// Bytes charged per entry on top of its key, value and content type: moka's
/// bookkeeping (hash bucket, key `Arc`, value entry, entry info, deque and
/// timer-wheel nodes: about nine allocations) plus this module's item header
/// and allocator rounding. Measured by the bench: 1M items of 11-byte keys
/// and 100-byte values raise RSS by ~515 B/item, i.e. ~390 B on top of the
/// 124 bytes of key + item. Keeps `node.memory_limit` close to the memory
/// the store really takes.
pub const ENTRY_OVERHEAD_BYTES: u64 = 390;

/// Keys up to this length live inside the key itself (no allocation).
const INLINE_KEY: usize = 22;

/// A key as stored: short keys inline, longer ones boxed. Hashes and compares
/// as its bytes, so lookups take a plain `&[u8]`.
#[derive(Clone)]
enum StoreKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl StoreKey {
    fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0u8; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            StoreKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            StoreKey::Heap(key.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            StoreKey::Inline { len, bytes } => &bytes[..*len as usize],
            StoreKey::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for StoreKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for StoreKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl PartialEq for StoreKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for StoreKey {}

const ITEM_HEADER: usize = 8 + 4 + 1;

/// A stored value with its version, TTL and content type, in ONE shared
/// allocation: `u64 version | u32 ttl_seconds | u8 ct_len | ct | value`.
/// Cloning is a reference-count increment.
#[derive(Clone)]
pub struct Item(Arc<[u8]>);

impl Item {
    fn new(version: u64, ttl_seconds: u32, content_type: &[u8], value: &[u8]) -> Item {
        let ct = &content_type[..content_type.len().min(u8::MAX as usize)];
        let len = ITEM_HEADER + ct.len() + value.len();
        let mut buf: Arc<[MaybeUninit<u8>]> = Arc::new_uninit_slice(len);
        let dst = Arc::get_mut(&mut buf).expect("a new Arc has one owner");
        let (head, rest) = dst.split_at_mut(ITEM_HEADER);
        fill(&mut head[..8], &version.to_le_bytes());
        fill(&mut head[8..12], &ttl_seconds.to_le_bytes());
        head[12].write(ct.len() as u8);
        let (ct_dst, value_dst) = rest.split_at_mut(ct.len());
        fill(ct_dst, ct);
        fill(value_dst, value);
        // SAFETY: every byte of `buf` was written above: the header, the
        // content type and the value exactly cover `len`.
        Item(unsafe { buf.assume_init() })
    }

    /// The version sent as `ETag`.
    pub fn version(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().unwrap_or_default())
    }

    /// The TTL the value was written with.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(u32::from_le_bytes(self.0[8..12].try_into().unwrap_or_default()).into())
    }

    /// The content type it was written with (empty: none given).
    pub fn content_type(&self) -> &[u8] {
        &self.0[ITEM_HEADER..ITEM_HEADER + self.0[12] as usize]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.0[ITEM_HEADER + self.0[12] as usize..]
    }

    /// The value as `Bytes` sharing this item's allocation (no copy).
    pub fn value_bytes(&self) -> Bytes {
        Bytes::from_owner(ItemValue(self.clone()))
    }

    fn stored_len(&self) -> usize {
        self.0.len()
    }
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

/// Expires each entry after the TTL it was (last) written with.
struct ItemTtl;

impl Expiry<StoreKey, Item> for ItemTtl {
    fn expire_after_create(&self, _key: &StoreKey, item: &Item, _at: Instant) -> Option<Duration> {
        Some(item.ttl())
    }

    fn expire_after_update(
        &self,
        _key: &StoreKey,
        item: &Item,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(item.ttl())
    }
}

/// Result of a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteResult {
    Deleted,
    NotFound,
    ConditionFailed,
}

/// The byte-bounded, TTL-aware store of one node.
pub struct Store {
    cache: moka::sync::Cache<StoreKey, Item>,
    memory_limit: u64,
    next_version: AtomicU64,
    /// Bytes written since the last housekeeping run; moka applies the
    /// bound lazily, so past `sync_threshold` a writer runs it itself.
    unsynced_bytes: AtomicU64,
    sync_threshold: u64,
}

impl Store {
    /// A store of at most `memory_limit` weighed bytes. Size evictions and
    /// TTL expirations are counted into the given counters.
    pub fn new(
        memory_limit: u64,
        policy: EvictionPolicy,
        evictions: Counter,
        expirations: Counter,
    ) -> Store {
        let policy = match policy {
            EvictionPolicy::Lru => moka::policy::EvictionPolicy::lru(),
            EvictionPolicy::Tinylfu => moka::policy::EvictionPolicy::tiny_lfu(),
        };
        let cache = moka::sync::Cache::builder()
            .max_capacity(memory_limit)
            .weigher(|key: &StoreKey, item: &Item| {
                entry_weight(key.as_slice().len(), item.stored_len())
                    .try_into()
                    .unwrap_or(u32::MAX)
            })
            .expire_after(ItemTtl)
            .eviction_policy(policy)
            .eviction_listener(move |_key, _item, cause| match cause {
                RemovalCause::Size => {
                    evictions.inc();
                }
                RemovalCause::Expired => {
                    expirations.inc();
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        // Versions only need to be unique per key across restarts of this
        // node: start from the clock.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Store {
            cache,
            memory_limit,
            next_version: AtomicU64::new(seed),
            unsynced_bytes: AtomicU64::new(0),
            sync_threshold: (memory_limit / 32).max(1),
        }
    }

    /// The live (unexpired) item under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Item> {
        self.cache.get(key)
    }

    /// Stores `value` under `key` if `condition` allows, with a new version.
    pub fn put(
        &self,
        key: &[u8],
        content_type: &[u8],
        value: &[u8],
        ttl: Duration,
        condition: &WriteCondition,
    ) -> PutResult {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let ttl_seconds = ttl.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        let item = Item::new(version, ttl_seconds, content_type, value);
        let weight = entry_weight(key.len(), item.stored_len());
        let result = self
            .cache
            .entry(StoreKey::new(key))
            .and_compute_with(|current| {
                if condition.allows(current.map(|entry| entry.value().version())) {
                    Op::Put(item)
                } else {
                    Op::Nop
                }
            });
        let result = match result {
            CompResult::Inserted(_) => PutResult::Created { version },
            CompResult::ReplacedWith(_) => PutResult::Replaced { version },
            CompResult::Unchanged(_) | CompResult::StillNone(_) | CompResult::Removed(_) => {
                return PutResult::ConditionFailed;
            }
        };
        let unsynced = self.unsynced_bytes.fetch_add(weight, Ordering::Relaxed) + weight;
        if unsynced >= self.sync_threshold {
            self.unsynced_bytes.store(0, Ordering::Relaxed);
            self.cache.run_pending_tasks();
        }
        result
    }

    /// Removes `key` if `condition` allows.
    pub fn delete(&self, key: &[u8], condition: &WriteCondition) -> DeleteResult {
        let mut allowed = true;
        let result = self
            .cache
            .entry(StoreKey::new(key))
            .and_compute_with(|current| {
                let Some(current) = current else {
                    return Op::Nop;
                };
                if condition.allows(Some(current.value().version())) {
                    Op::Remove
                } else {
                    allowed = false;
                    Op::Nop
                }
            });
        match result {
            CompResult::Removed(_) => DeleteResult::Deleted,
            _ if !allowed => DeleteResult::ConditionFailed,
            _ => DeleteResult::NotFound,
        }
    }

    /// Applies pending evictions and expirations now (moka does this
    /// lazily); call before reading [`Store::entry_count`] /
    /// [`Store::weighted_size`] for exact figures.
    pub fn run_pending_tasks(&self) {
        self.unsynced_bytes.store(0, Ordering::Relaxed);
        self.cache.run_pending_tasks();
    }

    /// Entries held (as of the last housekeeping run).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Weighed bytes held (as of the last housekeeping run).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// `node.memory_limit` in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }
}

fn entry_weight(key_len: usize, stored_len: usize) -> u64 {
    key_len as u64 + stored_len as u64 + ENTRY_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(limit: u64) -> (Store, Counter, Counter) {
        let (ev, ex) = (Counter::default(), Counter::default());
        (
            Store::new(limit, EvictionPolicy::Lru, ev.clone(), ex.clone()),
            ev,
            ex,
        )
    }

    #[test]
    fn item_layout_round_trips() {
        let item = Item::new(42, 7, b"text/plain", b"hello");
        assert_eq!(item.version(), 42);
        assert_eq!(item.ttl(), Duration::from_secs(7));
        assert_eq!(item.content_type(), b"text/plain");
        assert_eq!(item.value(), b"hello");
        assert_eq!(&item.value_bytes()[..], b"hello");
        let empty = Item::new(1, 1, b"", b"");
        assert_eq!(empty.content_type(), b"");
        assert_eq!(empty.value(), b"");
    }

    #[test]
    fn keys_compare_as_bytes_inline_or_not() {
        let long = vec![7u8; 100];
        assert!(StoreKey::new(&long) == StoreKey::new(&long));
        assert!(StoreKey::new(b"ab") != StoreKey::new(b"ab\0"));
        let (s, _, _) = store(1 << 20);
        for key in [
            &b""[..],
            b"short",
            &long,
            &[0u8; INLINE_KEY],
            &[0u8; INLINE_KEY + 1],
        ] {
            s.put(
                key,
                b"",
                key,
                Duration::from_secs(60),
                &WriteCondition::Always,
            );
        }
        for key in [
            &b""[..],
            b"short",
            &long,
            &[0u8; INLINE_KEY],
            &[0u8; INLINE_KEY + 1],
        ] {
            assert_eq!(s.get(key).unwrap().value(), key);
        }
    }

    #[test]
    fn conditional_writes() {
        let (s, _, _) = store(1 << 20);
        let ttl = Duration::from_secs(60);
        assert_eq!(
            s.put(b"k", b"", b"x", ttl, &WriteCondition::IfPresent),
            PutResult::ConditionFailed
        );
        let PutResult::Created { version: v1 } =
            s.put(b"k", b"", b"1", ttl, &WriteCondition::IfAbsent)
        else {
            panic!()
        };
        assert_eq!(
            s.put(b"k", b"", b"2", ttl, &WriteCondition::IfAbsent),
            PutResult::ConditionFailed
        );
        let PutResult::Replaced { version: v2 } =
            s.put(b"k", b"", b"2", ttl, &WriteCondition::IfVersionIn(vec![v1]))
        else {
            panic!()
        };
        assert_ne!(v1, v2);
        assert_eq!(
            s.put(b"k", b"", b"3", ttl, &WriteCondition::IfVersionIn(vec![v1])),
            PutResult::ConditionFailed
        );
        assert_eq!(s.get(b"k").unwrap().value(), b"2");
        assert_eq!(
            s.delete(b"k", &WriteCondition::IfVersionIn(vec![v1])),
            DeleteResult::ConditionFailed
        );
        assert_eq!(
            s.delete(b"k", &WriteCondition::IfVersionIn(vec![v2])),
            DeleteResult::Deleted
        );
        assert_eq!(
            s.delete(b"k", &WriteCondition::Always),
            DeleteResult::NotFound
        );
    }

    /// The bound holds even between moka's own housekeeping runs: writers
    /// apply it once `memory_limit / 32` bytes are unsynced.
    #[test]
    fn byte_bound_holds_under_a_flood() {
        let limit = 1 << 20;
        let (s, evictions, _) = store(limit);
        let value = vec![1u8; 10_000];
        for i in 0..1000u32 {
            s.put(
                &i.to_be_bytes(),
                b"",
                &value,
                Duration::from_secs(60),
                &WriteCondition::Always,
            );
            assert!(
                s.weighted_size() <= limit + limit / 32 + 10_500,
                "{}",
                s.weighted_size()
            );
        }
        s.run_pending_tasks();
        assert!(s.weighted_size() <= limit);
        assert!(s.entry_count() <= limit / 10_000);
        assert!(
            evictions.get() >= 1000 - limit / 10_000,
            "{}",
            evictions.get()
        );
    }
}
