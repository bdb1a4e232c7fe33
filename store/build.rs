//! `sqlx::migrate!` embeds `../migrations/` at compile time; without this line Cargo would
//! not notice a new or changed migration file and would keep the old set.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
