//! The fake API server's objects: JSON documents keyed by resource, namespace and name,
//! with one `resourceVersion` counter for everything (as etcd's revision), a log of
//! changes for watches, and garbage collection by `ownerReferences`.
//!
//! Invariants:
//! - Every write bumps the counter once and stamps the object with it; a write naming a
//!   `resourceVersion` other than the stored one is a [`Refusal::Conflict`], a create of an
//!   existing name [`Refusal::AlreadyExists`].
//! - Every change is in the log and on the broadcast channel in counter order, taken under
//!   one lock, so a watcher that subscribes under that lock misses nothing and sees nothing
//!   twice. A watch from a version older than the log keeps ([`Store::compact`]) is
//!   [`Refusal::Expired`] (410).
//! - `DELETED` events carry the object's last state, stamped with the deletion's version.
//! - Deleting an object deletes every object whose `ownerReferences` name its uid.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Identifies a collection: `pods`, `secrets`, `coordination.k8s.io/leases`, ...
pub(crate) type Resource = String;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) resource: Resource,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) resource: Resource,
    pub(crate) namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub(crate) kind: &'static str,
    pub(crate) object: Value,
}

/// Why a write or watch was refused (the HTTP layer turns these into `Status` objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound,
    AlreadyExists,
    /// The write named a stale `resourceVersion`.
    Conflict(String),
    /// The requested `resourceVersion` is older than the log keeps.
    Expired(u64),
    Invalid(String),
}

pub(crate) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Change>,
    /// Changes up to this version are no longer in the log.
    compacted: u64,
    max_log: usize,
    uids: u64,
    pub(crate) changes: broadcast::Sender<Change>,
}

/// `kind` and `apiVersion` of a resource's objects.
pub(crate) fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "pods" => ("Pod", "v1"),
        "secrets" => ("Secret", "v1"),
        "configmaps" => ("ConfigMap", "v1"),
        "events" => ("Event", "v1"),
        "coordination.k8s.io/leases" => ("Lease", "coordination.k8s.io/v1"),
        "events.k8s.io/events" => ("Event", "events.k8s.io/v1"),
        _ => ("Unknown", "v1"),
    }
}

fn rv_of(object: &Value) -> Option<&str> {
    object["metadata"]["resourceVersion"].as_str()
}

pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            rv: 1000,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            compacted: 1000,
            max_log: 10_000,
            uids: 0,
            changes: broadcast::channel(16_384).0,
        }
    }

    pub(crate) fn version(&self) -> u64 {
        self.rv
    }

    fn record(&mut self, resource: &str, namespace: &str, kind: &'static str, object: Value) {
        let change = Change {
            rv: self.rv,
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            kind,
            object,
        };
        self.log.push_back(change.clone());
        while self.log.len() > self.max_log {
            if let Some(old) = self.log.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = self.changes.send(change);
    }

    /// Forgets the change log and moves the version on (as a compaction followed by any
    /// write would): every watch resuming from a version it saw before gets 410.
    pub(crate) fn compact(&mut self) {
        self.log.clear();
        self.rv += 1;
        self.compacted = self.rv;
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `resource` in `namespace` (all namespaces when `None`), in key order.
    pub(crate) fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|n| n == k.namespace))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn create(&mut self, key: &Key, mut object: Value) -> Result<Value, Refusal> {
        if self.objects.contains_key(key) {
            return Err(Refusal::AlreadyExists);
        }
        if !object.is_object() {
            return Err(Refusal::Invalid("the body is not an object".into()));
        }
        self.rv += 1;
        self.uids += 1;
        let (kind, api_version) = kind_of(&key.resource);
        object["kind"] = json!(kind);
        object["apiVersion"] = json!(api_version);
        let meta = &mut object["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["name"] = json!(key.name);
        meta["namespace"] = json!(key.namespace);
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uids));
        meta["resourceVersion"] = json!(self.rv.to_string());
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
        }
        self.objects.insert(key.clone(), object.clone());
        self.record(&key.resource, &key.namespace, "ADDED", object.clone());
        Ok(object)
    }

    /// Replaces an object; a `resourceVersion` in `object` must be the stored one.
    pub(crate) fn replace(&mut self, key: &Key, mut object: Value) -> Result<Value, Refusal> {
        let stored = self.objects.get(key).ok_or(Refusal::NotFound)?;
        if let Some(rv) = rv_of(&object) {
            if Some(rv) != rv_of(stored) {
                return Err(Refusal::Conflict(format!(
                    "the object has been modified; please apply your changes to the latest version and try again (stored {}, given {rv})",
                    rv_of(stored).unwrap_or_default()
                )));
            }
        }
        // What the server owns stays the server's.
        for field in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
        ] {
            object["metadata"][field] = stored["metadata"][field].clone();
        }
        object["kind"] = stored["kind"].clone();
        object["apiVersion"] = stored["apiVersion"].clone();
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.record(&key.resource, &key.namespace, "MODIFIED", object.clone());
        Ok(object)
    }

    /// Applies a JSON merge patch (RFC 7386); a `resourceVersion` in it must match.
    pub(crate) fn merge_patch(&mut self, key: &Key, patch: &Value) -> Result<Value, Refusal> {
        let mut object = self.objects.get(key).ok_or(Refusal::NotFound)?.clone();
        if let Some(rv) = rv_of(patch) {
            if Some(rv) != rv_of(&object) {
                return Err(Refusal::Conflict(format!(
                    "the object has been modified; stored {}, given {rv}",
                    rv_of(&object).unwrap_or_default()
                )));
            }
        }
        merge(&mut object, patch);
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        self.replace(key, object)
    }

    /// Changes an object as the server's own controllers do (the kubelet's status
    /// updates), without a version check.
    pub(crate) fn update_with(
        &mut self,
        key: &Key,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, Refusal> {
        let mut object = self.objects.get(key).ok_or(Refusal::NotFound)?.clone();
        change(&mut object);
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        self.replace(key, object)
    }

    /// Removes an object now (`DELETED` with its last state), then what it owns.
    pub(crate) fn remove(&mut self, key: &Key) -> Result<Value, Refusal> {
        let mut object = self.objects.remove(key).ok_or(Refusal::NotFound)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(&key.resource, &key.namespace, "DELETED", object.clone());
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            let owned: Vec<Key> = self
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.namespace == key.namespace
                        && v["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in owned {
                let _ = self.remove(&k);
            }
        }
        Ok(object)
    }

    /// Marks an object as being deleted (`deletionTimestamp`), as the server does for a pod
    /// on a node: the kubelet removes it once its containers have stopped.
    pub(crate) fn mark_deleting(&mut self, key: &Key, grace: i64) -> Result<Value, Refusal> {
        let stored = self.objects.get(key).ok_or(Refusal::NotFound)?;
        if !stored["metadata"]["deletionTimestamp"].is_null() {
            return Ok(stored.clone());
        }
        let mut object = stored.clone();
        self.rv += 1;
        object["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.record(&key.resource, &key.namespace, "MODIFIED", object.clone());
        Ok(object)
    }

    /// The changes after `since` to replay to a watch, or `Expired` if the log no longer
    /// holds them all.
    pub(crate) fn changes_since(&self, since: u64) -> Result<Vec<Change>, Refusal> {
        if since < self.compacted {
            return Err(Refusal::Expired(since));
        }
        Ok(self.log.iter().filter(|c| c.rv > since).cloned().collect())
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    if let Some(map) = target.as_object_mut() {
                        map.remove(k);
                    }
                } else {
                    merge(&mut target[k], v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key {
            resource: "pods".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn versions_conflicts_and_owner_collection() {
        let mut store = Store::new();
        let pod = store.create(&key("p"), json!({"metadata": {}})).unwrap();
        assert_eq!(
            store.create(&key("p"), json!({})),
            Err(Refusal::AlreadyExists)
        );
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
        let secret = Key {
            resource: "secrets".into(),
            ..key("s")
        };
        store
            .create(
                &secret,
                json!({"metadata": {"ownerReferences": [{"uid": uid}]}}),
            )
            .unwrap();
        let mut stale = pod.clone();
        stale["spec"] = json!({"a": 1});
        store.replace(&key("p"), stale.clone()).unwrap();
        assert!(matches!(
            store.replace(&key("p"), stale),
            Err(Refusal::Conflict(_))
        ));
        let before = store.version();
        store.remove(&key("p")).unwrap();
        assert!(
            store.get(&secret).is_none(),
            "the owned secret went with its pod"
        );
        let changes = store.changes_since(before).unwrap();
        assert_eq!(
            changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
            ["DELETED", "DELETED"]
        );
        assert_eq!(changes[0].object["spec"]["a"], 1, "the last state");
        store.compact();
        assert!(matches!(
            store.changes_since(before),
            Err(Refusal::Expired(_))
        ));
    }
}
