//! The consumer side of a distributed trigger's stream (`crate::distribute`):
//! entries carry whole events, and an ordered trigger's entries carry their
//! key's sequence number. An entry runs only once its predecessor of the
//! same key has ended on whichever replica ran it (`done` is `seq - 1`);
//! until then it is held here, unacknowledged. An entry whose number is
//! already done ran before (its replica died before acknowledging it, and it
//! was claimed again) and is acknowledged without running.

use redis::aio::MultiplexedConnection;
use redis::streams::StreamId;

use crate::config::DistributedKeys;
use crate::event::Event;

/// An entry's place in its key's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Sequenced {
    pub key: String,
    pub seq: u64,
}

/// What to do with an entry now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Its turn (or it is unordered): run it.
    Run,
    /// An earlier entry of its key has not ended yet: hold it.
    Wait,
    /// Its number is done already: acknowledge it unrun.
    Duplicate,
}

/// The key and sequence number of an entry's fields, if it has them.
pub(super) fn sequenced(fields: &[(String, String)]) -> Option<Sequenced> {
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    Some(Sequenced {
        key: get("wasmtrigger.key")?.clone(),
        seq: get("wasmtrigger.seq")?.parse().ok()?,
    })
}

/// The event an entry carries, which must be `trigger`'s.
pub(super) fn event_of(fields: &[(String, String)], trigger: &str) -> Result<Event, String> {
    let text = fields
        .iter()
        .find(|(k, _)| k == "wasmtrigger.event")
        .map(|(_, v)| v)
        .ok_or("the entry has no `wasmtrigger.event` field")?;
    crate::distribute::event_of(text, trigger)
}

/// Decides, for entries with their sequence numbers, which run now.
pub(super) async fn verdicts(
    con: &mut MultiplexedConnection,
    keys: &DistributedKeys,
    entries: &[Sequenced],
) -> redis::RedisResult<Vec<Verdict>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(&keys.done);
    for e in entries {
        cmd.arg(&e.key);
    }
    let done: Vec<Option<u64>> = cmd.query_async(con).await?;
    Ok(entries
        .iter()
        .zip(done)
        .map(|(e, done)| verdict(e.seq, done.unwrap_or(0)))
        .collect())
}

fn verdict(seq: u64, done: u64) -> Verdict {
    if seq <= done {
        Verdict::Duplicate
    } else if seq == done + 1 {
        Verdict::Run
    } else {
        Verdict::Wait
    }
}

/// An entry waiting for its turn.
pub(super) struct Held {
    pub entry: StreamId,
    pub order: Sequenced,
}

/// Drops what every replica has finished from the stream: entries older
/// than the oldest one still pending (or, with none pending, than the last
/// one delivered). Entries not yet delivered are never touched.
pub(super) async fn trim(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    let oldest_pending = match &pending {
        redis::Value::Array(items) => items.get(1).and_then(crate::distribute::as_text),
        _ => None,
    };
    let floor = match oldest_pending {
        Some(id) => id,
        None => {
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(stream)
                .query_async(con)
                .await?;
            match last_delivered(&groups, group) {
                Some(id) if id != "0-0" => id,
                _ => return Ok(()),
            }
        }
    };
    let _: i64 = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(floor)
        .query_async(con)
        .await?;
    Ok(())
}

/// `last-delivered-id` of `group` from an `XINFO GROUPS` reply.
fn last_delivered(reply: &redis::Value, group: &str) -> Option<String> {
    let pairs = crate::distribute::group_info(reply, group)?;
    let (_, id) = pairs.iter().find(|(k, _)| k == "last-delivered-id")?;
    crate::distribute::as_text(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_runs_only_after_its_predecessor() {
        assert_eq!(verdict(1, 0), Verdict::Run);
        assert_eq!(verdict(3, 1), Verdict::Wait);
        assert_eq!(verdict(2, 2), Verdict::Duplicate);
        assert_eq!(verdict(1, 5), Verdict::Duplicate);
    }

    #[test]
    fn an_entry_names_its_event_and_its_place() {
        let event = Event::new("t", "kube-watch", "update", &serde_json::json!({"a": 1}));
        let fields = vec![
            (
                "wasmtrigger.event".to_string(),
                serde_json::to_string(&event).unwrap(),
            ),
            ("wasmtrigger.key".to_string(), "uid-1".to_string()),
            ("wasmtrigger.seq".to_string(), "4".to_string()),
        ];
        let back = event_of(&fields, "t").expect("the event");
        assert_eq!(
            (back.id, back.source, back.kind),
            (event.id, event.source, event.kind)
        );
        assert_eq!(
            sequenced(&fields),
            Some(Sequenced {
                key: "uid-1".into(),
                seq: 4
            })
        );
        assert!(
            event_of(&fields, "other")
                .unwrap_err()
                .contains("for trigger `t`")
        );
        assert!(
            event_of(&fields[1..], "t")
                .unwrap_err()
                .contains("no `wasmtrigger.event`")
        );
        let forged = vec![("wasmtrigger.event".to_string(), "{\"id\": 1}".to_string())];
        assert!(event_of(&forged, "t").unwrap_err().contains("not an event"));
    }
}
