//! Integration tests of the ptrack extension on real PostgreSQL 13 to 18 servers, out of
//! process through the testkit. Each needs the extension installed (`scripts/install-ext`,
//! which `scripts/test` runs first); without it they skip loudly, and fail under `CI=true`.

/// One test per major of `$f(major)` (or `$f(major, Location::for_major(major))` with
/// `located`): `$f::pg13` to `$f::pg18`, each skipping loudly where that major is missing.
macro_rules! every_major {
    ($f:ident) => {
        every_major!(@ $f, |m| super::$f(m));
    };
    ($f:ident, located) => {
        every_major!(@ $f, |m| super::$f(m, ptrack_ext_tests::Location::for_major(m)));
    };
    (@ $f:ident, $call:expr) => {
        mod $f {
            #[test]
            fn pg13() {
                ($call)(13)
            }
            #[test]
            fn pg14() {
                ($call)(14)
            }
            #[test]
            fn pg15() {
                ($call)(15)
            }
            #[test]
            fn pg16() {
                ($call)(16)
            }
            #[test]
            fn pg17() {
                ($call)(17)
            }
            #[test]
            fn pg18() {
                ($call)(18)
            }
        }
    };
}

mod basic;
mod failures;
mod location;
mod property;
mod saves;
mod tools;
mod upgrade;
