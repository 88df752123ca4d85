//! Rebuilds the operator when a migration file is added: `sqlx::migrate!`
//! embeds the folder but does not tell cargo to watch it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
