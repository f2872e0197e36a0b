//! Tests of [`super`]: bounds chosen from samples, thinning, clock steps, the seqlock copy.

use super::*;

fn area() -> Vec<AtomicU64> {
    (0..CLOCK_WORDS).map(|_| AtomicU64::new(0)).collect()
}

fn s(flushed: u64, at_ns: u64) -> Sample {
    Sample {
        flushed: Lsn(flushed),
        at_ns,
    }
}

const SEC: u64 = 1_000_000_000;

#[test]
fn bound_is_the_newest_sample_before_the_start() {
    let w = area();
    let c = Clock::new(&w).unwrap();
    c.map_created(10 * SEC);
    for (i, p) in [100u64, 200, 300].iter().enumerate() {
        c.push(s(*p, (11 + i as u64) * SEC));
    }
    let st = c.read();
    let now = 20 * SEC;
    // 250: flushed no further than 200 at 12 s, so 250 was reached after 12 s.
    assert_eq!(
        st.changed_since(Lsn(250), Lsn(50), now),
        Some(12 * SEC - MARGIN_NS)
    );
    // Exactly at a sampled position: that sample does not bound it (it may have been reached).
    assert_eq!(
        st.changed_since(Lsn(200), Lsn(50), now),
        Some(11 * SEC - MARGIN_NS)
    );
    // Before every sample, at or after init_lsn: unknown.
    assert_eq!(st.changed_since(Lsn(100), Lsn(50), now), None);
    assert_eq!(st.changed_since(Lsn(50), Lsn(50), now), None);
    // Before init_lsn: the map's creation.
    assert_eq!(
        st.changed_since(Lsn(10), Lsn(50), now),
        Some(10 * SEC - MARGIN_NS)
    );
}

#[test]
fn without_creation_time_a_start_before_init_lsn_uses_init_lsn() {
    let w = area();
    let c = Clock::new(&w).unwrap();
    c.push(s(100, 11 * SEC));
    c.push(s(200, 12 * SEC));
    let st = c.read();
    assert_eq!(
        st.changed_since(Lsn(10), Lsn(150), 20 * SEC),
        Some(11 * SEC - MARGIN_NS)
    );
    assert_eq!(st.changed_since(Lsn(10), Lsn(100), 20 * SEC), None);
}

#[test]
fn a_clock_behind_the_samples_knows_nothing() {
    let w = area();
    let c = Clock::new(&w).unwrap();
    c.push(s(100, 11 * SEC));
    c.push(s(200, 12 * SEC));
    assert_eq!(c.read().changed_since(Lsn(300), Lsn(0), 12 * SEC - 1), None);
    assert_eq!(c.newest(), Some(s(200, 12 * SEC)));
    // A sample going back in time drops everything.
    c.push(s(300, 5 * SEC));
    assert_eq!(c.read().samples, vec![s(300, 5 * SEC)]);
    // So does a position going back (another timeline from an earlier point).
    c.push(s(250, 6 * SEC));
    assert_eq!(c.read().samples, vec![s(250, 6 * SEC)]);
}

#[test]
fn repeated_positions_keep_the_oldest_time() {
    let w = area();
    let c = Clock::new(&w).unwrap();
    c.push(s(100, 11 * SEC));
    c.push(s(100, 15 * SEC));
    assert_eq!(c.read().samples, vec![s(100, 11 * SEC)]);
}

#[test]
fn thinning_keeps_order_the_newest_half_and_bounds_valid() {
    let w = area();
    let c = Clock::new(&w).unwrap();
    let n = 3 * SAMPLES as u64;
    for i in 1..=n {
        c.push(s(i * 10, i * SEC));
    }
    let st = c.read();
    assert!(st.samples.len() <= SAMPLES);
    assert!(
        st.samples
            .windows(2)
            .all(|p| p[0].flushed < p[1].flushed && p[0].at_ns < p[1].at_ns)
    );
    assert_eq!(st.samples.last(), Some(&s(n * 10, n * SEC)));
    // The newest quarter is intact.
    let tail = &st.samples[st.samples.len() - SAMPLES / 4..];
    assert!(
        tail.windows(2)
            .all(|p| p[1].flushed.0 - p[0].flushed.0 == 10)
    );
    // Every bound is a true lower bound: position i*10 was reached at i s.
    for start in (15..n * 10).step_by(97) {
        if let Some(b) = st.changed_since(Lsn(start), Lsn(0), (n + 1) * SEC) {
            let reached = start.div_ceil(10) * SEC;
            assert!(b < reached, "bound {b} for {start}, reached at {reached}");
        }
    }
}

#[test]
fn creation_clears_samples_and_earlier_samples_are_refused() {
    let w = area();
    let c = Clock::new(&w).unwrap();
    c.push(s(100, 11 * SEC));
    c.map_created(20 * SEC);
    assert!(c.read().samples.is_empty());
    // Before the creation: the clock went back; only the new sample is kept.
    c.push(s(300, 19 * SEC));
    assert_eq!(
        c.read(),
        ClockState {
            created_ns: None,
            samples: vec![s(300, 19 * SEC)]
        }
    );
    c.map_created(20 * SEC);
    c.forget();
    assert_eq!(c.read(), ClockState::default());
}

#[test]
fn readers_never_see_a_torn_copy() {
    let w = area();
    let c = Clock::new(&w).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 1..20_000u64 {
                c.push(s(i, i));
            }
        });
        for _ in 0..2_000 {
            let st = c.read();
            assert!(st.samples.windows(2).all(|p| p[0].flushed < p[1].flushed));
            assert!(st.samples.iter().all(|x| x.flushed.0 == x.at_ns));
        }
    });
}

#[test]
fn newest_of_an_empty_area_is_none() {
    let w = area();
    assert_eq!(Clock::new(&w).unwrap().newest(), None);
}

#[test]
fn too_small_an_area_is_refused() {
    let w: Vec<AtomicU64> = (0..CLOCK_WORDS - 1).map(|_| AtomicU64::new(0)).collect();
    assert!(Clock::new(&w).is_none());
}
