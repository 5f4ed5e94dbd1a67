//! Rebuilds when a migration is added or changed: `sqlx::migrate!` embeds the `migrations/` folders at
//! compile time, and on stable Rust cargo would not otherwise see a new file there (sqlx's advice).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
