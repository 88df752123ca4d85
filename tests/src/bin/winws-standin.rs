//! Plays zapret's `winws` at the command line for tests (see `veil_e2e::standin`).

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(veil_e2e::standin::run(
        veil_e2e::standin::Program::Winws,
        &argv,
    ));
}
