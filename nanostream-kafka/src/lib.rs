//! Kafka sources and sinks for nanostream (work in progress).
