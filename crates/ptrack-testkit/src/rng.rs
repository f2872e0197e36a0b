//! The randomness of randomised tests: a xorshift64* generator seeded from `PTRACK_SEED` or the
//! clock, with the seed printed so that a failing run can be repeated.

/// xorshift64*: reproducible from the printed seed.
#[derive(Debug, Clone)]
pub struct TestRng(u64, u64);

impl TestRng {
    /// Seeds from `PTRACK_SEED`, else the clock, and prints `<what> with PTRACK_SEED=<seed>`.
    pub fn from_env(what: &str) -> TestRng {
        let seed = std::env::var("PTRACK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        eprintln!("{what} with PTRACK_SEED={seed}");
        TestRng(seed, seed)
    }

    /// The seed it started from.
    pub fn seed(&self) -> u64 {
        self.1
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}
