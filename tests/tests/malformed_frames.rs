//! The malformed-frame corpus through the real programs: on an enforced
//! endpoint none is forwarded, in either direction, and the kernel accepts
//! every run except those BPF_PROG_TEST_RUN itself refuses before any
//! program runs (see `fixture::test_run_refuses`).

use netwatch::datapath::Hook;
use netwatch_common::reason::{DropReason, Verdict};
use netwatch_tests::{corpus::malformed_corpus, fixture::*, packets::hex};

#[test]
fn no_malformed_frame_is_forwarded_on_an_enforced_endpoint() {
    let corpus = malformed_corpus(EP_MAC, EP_V4, EP_V6);
    assert!(
        corpus.len() > 500,
        "corpus unexpectedly small: {}",
        corpus.len()
    );
    let mut harness = Harness::standard();
    let mut failures = Vec::new();
    let mut refused = 0;
    for (name, frame) in &corpus {
        for hook in [Hook::FromContainer, Hook::ToContainer] {
            if test_run_refuses(frame) {
                match harness.kernel(hook, frame) {
                    Err(e) if is_einval(&e) => refused += 1,
                    other => failures.push(format!(
                        "{name} ({hook:?}): expected the kernel to refuse the run, got {other:?}"
                    )),
                }
                continue;
            }
            let got = match harness.kernel(hook, frame) {
                Ok(got) => got,
                Err(e) => {
                    failures.push(format!("{name} ({hook:?}): test run failed: {e}"));
                    continue;
                }
            };
            let kernel = got.decision();
            let model = harness.model(hook, frame);
            let dropped = got.action == TC_DROP
                && kernel
                    .is_some_and(|d| d.verdict == Verdict::Dropped && d.reason != DropReason::None);
            if !dropped || kernel != model {
                failures.push(format!(
                    "{name} ({hook:?}): kernel {:?} action {}, model {model:?}\n  frame: {}",
                    kernel,
                    got.action,
                    hex(frame)
                ));
            }
        }
    }
    assert!(refused > 0, "the corpus has no frames the kernel refuses");
    assert!(
        failures.is_empty(),
        "{} malformed frames were not dropped as the model says:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
