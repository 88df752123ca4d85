//! `veil-operator link NAME [-n NAMESPACE] [--qr]`: a VlessKey's
//! `vless://` link, optionally as a QR code drawn with Unicode blocks.
//!
//! The link is a credential: it goes to stdout only, for the person who
//! holds the admin token.

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use serde_json::Value;

use super::get::{Connection, GetError};

/// Arguments of `link`.
#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    /// The VlessKey's name.
    pub name: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Also print the link as a QR code (for phone clients to scan).
    #[arg(long)]
    pub qr: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// Why `link` failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The operator could not be asked, or refused (its message says why).
    #[error(transparent)]
    Get(#[from] GetError),
    /// The operator's answer had no link.
    #[error("the operator's answer has no `link`")]
    NoLink,
    /// The link does not fit in a QR code.
    #[error("cannot draw the link as a QR code: {0}")]
    Qr(#[source] qrcode::types::QrError),
}

/// Prints the link (and the QR code with `--qr`).
pub async fn link(args: LinkArgs) -> Result<(), LinkError> {
    let body = args
        .connection
        .request(&format!(
            "/v1/credentials/vlesskeys/{}/{}",
            args.namespace, args.name
        ))
        .await?;
    let link = body
        .get("link")
        .and_then(Value::as_str)
        .ok_or(LinkError::NoLink)?;
    println!("{link}");
    if args.qr {
        println!("{}", qr_text(link)?);
    }
    Ok(())
}

/// The QR code of `text` in Unicode half blocks, two modules per character
/// cell, with the quiet zone. Dark modules are drawn as blank cells, so the
/// code reads dark-on-light on the usual dark terminal background.
pub fn qr_text(text: &str) -> Result<String, LinkError> {
    let code = QrCode::new(text.as_bytes()).map_err(LinkError::Qr)?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_renders_as_a_square_block_qr_code() {
        let text = qr_text("vless://7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41@vpn.example.com:443?encryption=none#alice").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 10, "{text}");
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // Two modules per cell vertically: about twice as wide as tall.
        assert!(width > lines.len() * 3 / 2, "{width}x{}", lines.len());
        assert!(text.contains('█') || text.contains('▀') || text.contains('▄'));
    }
}
