//! Container and sandbox events for GetContainerEvents (the kubelet's evented PLEG): created,
//! started, stopped, deleted, in the order they happened, to every subscriber.
//!
//! Publishing never blocks the daemon: each subscriber has a bounded queue, and one that falls
//! that far behind is dropped (its stream ends with an error; the kubelet then relists).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// One event; for a sandbox, `id` is the pod's id (as containerd reports sandboxes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub pod_id: String,
    pub kind: EventKind,
    /// Unix nanoseconds.
    pub timestamp: i64,
}

/// What a subscriber reads: events, then the end of the stream, with `overflowed` set when it
/// was dropped for falling behind.
pub struct Subscription {
    pub events: mpsc::Receiver<Event>,
    pub overflowed: Arc<AtomicBool>,
}

struct Subscriber {
    tx: mpsc::Sender<Event>,
    overflowed: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct EventBus {
    subscribers: Mutex<Vec<Subscriber>>,
}

impl EventBus {
    /// A new subscriber that may fall `capacity` events behind.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, events) = mpsc::channel(capacity.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        self.lock().push(Subscriber {
            tx,
            overflowed: overflowed.clone(),
        });
        Subscription { events, overflowed }
    }

    pub fn publish(&self, id: &str, pod_id: &str, kind: EventKind) {
        let event = Event {
            id: id.to_string(),
            pod_id: pod_id.to_string(),
            kind,
            timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        };
        self.lock().retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.overflowed.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    pub fn subscribers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_gets_every_event_in_order() {
        let bus = EventBus::default();
        let mut a = bus.subscribe(10);
        let mut b = bus.subscribe(10);
        bus.publish("c1", "p", EventKind::Created);
        bus.publish("c1", "p", EventKind::Started);
        for s in [&mut a, &mut b] {
            assert_eq!(s.events.try_recv().unwrap().kind, EventKind::Created);
            assert_eq!(s.events.try_recv().unwrap().kind, EventKind::Started);
            assert!(s.events.try_recv().is_err());
        }
    }

    #[test]
    fn a_stuck_subscriber_is_dropped_and_never_blocks_publishing() {
        let bus = EventBus::default();
        let mut stuck = bus.subscribe(3);
        let mut live = bus.subscribe(1000);
        for i in 0..500 {
            bus.publish(&format!("c{i}"), "p", EventKind::Created);
            // The live one keeps up.
            assert_eq!(live.events.try_recv().unwrap().id, format!("c{i}"));
        }
        assert_eq!(bus.subscribers(), 1, "the stuck subscriber was dropped");
        assert!(stuck.overflowed.load(Ordering::Relaxed));
        // What it had queued is still delivered, then its stream ends.
        assert_eq!(stuck.events.try_recv().unwrap().id, "c0");
        assert_eq!(stuck.events.try_recv().unwrap().id, "c1");
        assert_eq!(stuck.events.try_recv().unwrap().id, "c2");
        assert!(matches!(
            stuck.events.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(!live.overflowed.load(Ordering::Relaxed));
    }

    #[test]
    fn a_gone_subscriber_is_forgotten() {
        let bus = EventBus::default();
        drop(bus.subscribe(4));
        bus.publish("c", "p", EventKind::Deleted);
        assert_eq!(bus.subscribers(), 0);
    }
}
