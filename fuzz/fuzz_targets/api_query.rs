//! Any query string a client can send to the agent's API
//! (`/v1/flows?container=…&since=…`): parsed into a filter or refused with
//! an error whose message is one line — never a panic.

#![no_main]

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use netwatch::api::query::parse_filter;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    match parse_filter(query, now) {
        Ok(filter) => {
            if let Some(since) = filter.since {
                let _ = since.to_string();
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "a multi-line error: {message:?}");
        }
    }
});
