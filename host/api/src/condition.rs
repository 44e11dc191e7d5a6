//! Conditions on a request: when a write may happen ([`WriteCondition`]) and
//! when a read is answered "not modified" ([`ReadCondition`]). What they
//! mean, independent of how they arrive: [`crate::etag`] reads them from
//! HTTP headers, [`crate::batch`] from batch entries, and the node's store
//! decides them against the stored version.

/// When a write (PUT or DELETE) may happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteCondition {
    /// Unconditionally.
    Always,
    /// Only if no value is stored (`If-None-Match: *`).
    IfAbsent,
    /// Only if some value is stored (`If-Match: *`).
    IfPresent,
    /// Only if the stored value's version is one of these
    /// (`If-Match: "<etag>", ...`); an empty list never matches.
    IfVersionIn(Vec<u64>),
}

impl WriteCondition {
    /// Whether the write may go ahead given the stored version (`None` when
    /// absent).
    pub fn allows(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (WriteCondition::Always, _) => true,
            (WriteCondition::IfAbsent, current) => current.is_none(),
            (WriteCondition::IfPresent, current) => current.is_some(),
            (WriteCondition::IfVersionIn(_), None) => false,
            (WriteCondition::IfVersionIn(list), Some(v)) => list.contains(&v),
        }
    }

    /// The reason given with a 412.
    pub fn failure_reason(&self) -> &'static str {
        match self {
            WriteCondition::Always => "no condition",
            WriteCondition::IfAbsent => "If-None-Match: * but the key has a value",
            WriteCondition::IfPresent => "If-Match: * but the key has no value",
            WriteCondition::IfVersionIn(_) => "If-Match does not match the stored version",
        }
    }
}

/// `If-None-Match` of a read: the versions the client already has (`*`
/// matches any stored value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadCondition {
    Always,
    IfNoneMatchAny,
    IfNoneMatch(Vec<u64>),
}

impl ReadCondition {
    /// Whether the client's copy is current (answer 304).
    pub fn not_modified(&self, current: u64) -> bool {
        match self {
            ReadCondition::Always => false,
            ReadCondition::IfNoneMatchAny => true,
            ReadCondition::IfNoneMatch(list) => list.contains(&current),
        }
    }
}
