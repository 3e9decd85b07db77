//! The log of a child process (node work run by the daemon): every event goes to stderr as a
//! [`NodeEvent`] line for the parent to read (see `shardvault_pg::node_events`).

use std::fmt::Write as _;

use shardvault_pg::node_events::NodeEvent;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

/// Writes each event as one [`NodeEvent::Log`] line.
pub struct ChildEvents;

/// An event's message, then its other fields as ` name=value`.
#[derive(Default)]
struct Message {
    message: String,
    fields: String,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for ChildEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut m = Message::default();
        event.record(&mut m);
        NodeEvent::Log {
            level: (*event.metadata().level()).into(),
            message: m.message + &m.fields,
        }
        .emit();
    }
}
