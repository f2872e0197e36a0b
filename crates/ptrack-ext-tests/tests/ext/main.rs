//! Integration tests of the ptrack extension on real PostgreSQL 15, 16 and 18 servers, out of
//! process through the testkit. Each needs the extension installed (`scripts/install-ext`,
//! which `scripts/test` runs first); without it they skip loudly, and fail under `CI=true`.

mod basic;
mod failures;
mod location;
mod property;
mod tools;
mod upgrade;
