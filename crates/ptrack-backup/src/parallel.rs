//! The one worker pool of backup, restore and validate: `jobs` threads take items by index, each
//! with its own state (a bundle writer, bundle readers), and the first error stops them all.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{Error, Result};

/// Runs `f(state, i)` for every `i < n` on `jobs` threads; `init(t)` makes thread `t`'s state and
/// `finish(t, state)` ends it. Returns the results in item order, or the first error.
pub fn run<S, R: Send>(
    jobs: usize,
    n: usize,
    init: impl Fn(usize) -> Result<S> + Sync,
    f: impl Fn(&mut S, usize) -> Result<R> + Sync,
    finish: impl Fn(usize, S) -> Result<()> + Sync,
) -> Result<Vec<R>> {
    let jobs = jobs.max(1).min(n.max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for t in 0..jobs {
            let (next, stop, results, failure, init, f, finish) =
                (&next, &stop, &results, &failure, &init, &f, &finish);
            s.spawn(move || {
                let work = || -> Result<()> {
                    let mut state = init(t)?;
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let r = f(&mut state, i)?;
                        results.lock().expect("results lock")[i] = Some(r);
                    }
                    finish(t, state)
                };
                if let Err(e) = work() {
                    stop.store(true, Ordering::Relaxed);
                    failure.lock().expect("failure lock").get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("failure lock") {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_in_order_and_first_error_wins() {
        let r = run(
            3,
            100,
            |_| Ok(0u32),
            |c, i| {
                *c += 1;
                Ok(i * 2)
            },
            |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(r, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        let e = run(
            2,
            50,
            |_| Ok(()),
            |_, i| {
                if i == 7 {
                    Err(crate::Refusal::BadPort("seven".into()).into())
                } else {
                    Ok(i)
                }
            },
            |_, _| Ok(()),
        );
        assert!(matches!(
            e.unwrap_err(),
            crate::Error::Refused(crate::Refusal::BadPort(p)) if p == "seven"
        ));
    }
}
