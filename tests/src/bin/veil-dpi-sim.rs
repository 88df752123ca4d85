//! `veil-dpi-sim`: the DPI simulator for Veil's tests (see
//! `veil_e2e::dpi_sim`). Runs inside a router network namespace.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = veil_e2e::dpi_sim::Args::parse();
    veil_e2e::dpi_sim::run(args)?;
    Ok(())
}
