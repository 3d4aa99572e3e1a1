//! Any bytes the ring buffer could hand the agent: decoded, merged into
//! the aggregate, shown to observers and written as a log line — never a
//! panic, and a record of the wrong size is never decoded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netwatch::flows::{FlowFilter, Pipeline};
use netwatch_common::event::FlowEvent;

fuzz_target!(|data: &[u8]| {
    let Some(event) = FlowEvent::from_bytes(data) else {
        assert_ne!(data.len(), std::mem::size_of::<FlowEvent>());
        return;
    };
    let pipeline = Pipeline::new(4, Box::new(|| Ok(Vec::new())));
    // Twice: the second merges into the entry the first made.
    for drop in pipeline.ingest(&[event, event]) {
        let _ = drop.log_line();
    }
    for entry in pipeline.flows(&FlowFilter::default()) {
        assert!(entry.flows >= 1);
    }
    let counters = pipeline.counters();
    assert_eq!(counters.records, 2);
});
