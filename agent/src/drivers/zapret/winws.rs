//! winws (Windows) specifics as plain functions, tested on every platform
//! (design §4a.2, §4a.5): the capture filter goes on winws' own command line
//! (`--wf-tcp`/`--wf-udp` = the union of the profiles' ports) instead of
//! firewall rules, and WinDivert's start failures become status messages
//! that say what to do. Only the process glue is `cfg(windows)`; it lives
//! with the engine process code.

use super::rules::{Capture, Ports};

/// The whole winws command line: capture filter, then the profiles.
pub fn argv(capture: &Capture, profiles: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(profiles.len() + 2);
    for (option, ports) in [("--wf-tcp", &capture.tcp), ("--wf-udp", &capture.udp)] {
        if let Some(list) = port_list(ports) {
            out.push(format!("{option}={list}"));
        }
    }
    out.extend(profiles.iter().cloned());
    out
}

/// winws' port list syntax: `80,443,1000-2000`; every port is `1-65535`.
fn port_list(ports: &Ports) -> Option<String> {
    match ports {
        Ports::Nothing => None,
        Ports::All => Some("1-65535".to_owned()),
        Ports::Ranges(ranges) => Some(
            ranges
                .iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// What to do about a WinDivert open failure with Win32 error `code`, for
/// the codes users actually meet.
pub fn advice(code: u32) -> Option<&'static str> {
    Some(match code {
        5 => {
            "WinDivert needs administrator rights: run the Veil agent as Administrator (or as a service under LocalSystem)"
        }
        577 => {
            "Windows refused the WinDivert driver's signature: install the current OS updates (SHA-2 code signing), or turn off Secure Boot / test-signing conflicts, then start the agent again"
        }
        654 => {
            "another WinDivert version is loaded: stop other zapret, GoodbyeDPI or WinDivert-based tools (`sc stop windivert`), or reboot, then start the agent again"
        }
        1275 => {
            "the WinDivert driver is blocked by security software (antivirus, Memory Integrity / HVCI driver blocklist): allow WinDivert64.sys there, then start the agent again"
        }
        1753 => {
            "the Base Filtering Engine service is not running: start it (`sc config BFE start= auto` and `sc start BFE`), then start the agent again"
        }
        _ => return None,
    })
}

/// Fragments of the English system messages winws prints after
/// `windivert: error opening filter:` (it formats the Win32 error), with
/// their codes.
const MESSAGES: &[(&str, u32)] = &[
    ("access is denied", 5),
    ("cannot verify the digital signature", 577),
    ("previous version of the driver is still in memory", 654),
    ("driver has been blocked from loading", 1275),
    ("no more endpoints available from the endpoint mapper", 1753),
];

/// The WinDivert error code behind a failed winws start, read from its
/// output (`win32 error N`, `code N`, or the system message text) or, when
/// the output says nothing, from its exit code.
pub fn error_code(exit_code: Option<i32>, lines: &[String]) -> Option<u32> {
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if let Some(&(_, code)) = MESSAGES.iter().find(|(text, _)| lower.contains(text)) {
            return Some(code);
        }
        for marker in ["win32 error ", "code "] {
            if let Some(at) = lower.find(marker) {
                let digits: String = lower[at + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(code) = digits.parse::<u32>()
                    && advice(code).is_some()
                {
                    return Some(code);
                }
            }
        }
    }
    exit_code
        .and_then(|c| u32::try_from(c).ok())
        .filter(|&c| advice(c).is_some())
}

/// The status message for a failed winws start: the advice when the
/// WinDivert error is known, else the engine's last output line.
pub fn failure_message(exit_code: Option<i32>, lines: &[String]) -> String {
    match error_code(exit_code, lines).and_then(|code| advice(code).map(|a| (code, a))) {
        Some((code, advice)) => format!("WinDivert error {code}: {advice}"),
        None => lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| format!("winws exited with {exit_code:?}")),
    }
}

#[cfg(test)]
mod tests;
