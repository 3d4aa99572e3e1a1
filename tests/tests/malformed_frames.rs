//! The malformed-frame corpus through the real programs: on an enforced
//! endpoint none is forwarded, in either direction, and the kernel accepts
//! every run except those BPF_PROG_TEST_RUN itself refuses before any
//! program runs (see `fixture::test_run_refuses`).

use netwatch::datapath::Hook;
use netwatch_common::reason::{DropReason, Verdict};
use netwatch_tests::{corpus::malformed_corpus, fixture::*, packets::hex};

/// Fails with every frame that was not dropped as the model says.
fn no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} malformed frames were not dropped as the model says:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let corpus = malformed_corpus(EP_MAC, EP_V4, EP_V6);
    assert!(
        corpus.len() > 500,
        "corpus unexpectedly small: {}",
        corpus.len()
    );
    corpus
}

#[test]
fn no_malformed_frame_is_forwarded_on_an_enforced_endpoint() {
    let corpus = corpus();
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
    no_failures(&failures);
}

/// The same corpus through the macvlan programs of an enforcing child: on
/// its parent, sent from the child's own namespace (so judged as its
/// egress, not as a forged MAC), and on the child itself, as received.
/// None is forwarded, and each is counted as the model says.
#[test]
fn no_malformed_frame_is_forwarded_by_the_macvlan_programs_of_an_enforced_child() {
    let corpus = corpus();
    let own = own_netns_cookie();
    let mut harness = Harness::macvlan(&macvlan_enforced_child(Hook::MacvlanParent, own));
    let mut failures = Vec::new();
    let mut checked = 0;
    for hook in [Hook::MacvlanParent, Hook::MacvlanChild] {
        harness.reconfigure(&macvlan_enforced_child(hook, own));
        for (name, frame) in &corpus {
            if test_run_refuses(frame) {
                continue;
            }
            let kernel = match harness.kernel_counted(hook, frame) {
                Ok(kernel) => kernel,
                Err(e) => {
                    failures.push(format!("{name} ({hook:?}): test run failed: {e}"));
                    continue;
                }
            };
            checked += 1;
            let model = harness.macvlan_model(hook, frame);
            let dropped = kernel.action == TC_DROP
                && kernel.verdicts[DropReason::None as usize] == 0
                && kernel.verdicts.iter().sum::<u64>() == 1;
            if !dropped || kernel != CountedOutcome::expected(&model) {
                failures.push(format!(
                    "{name} ({hook:?}): kernel {kernel:?}, model {:?}\n  frame: {}",
                    model.counted,
                    hex(frame)
                ));
            }
        }
    }
    assert!(checked > 1000, "too few frames ran: {checked}");
    no_failures(&failures);
}
