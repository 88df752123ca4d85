//! `nfqws`/`winws` stand-ins: processes that behave like zapret's at the
//! command line (strict argument check, file checks, `--version`,
//! `--dry-run`, daemon-like life until SIGTERM) without touching packets,
//! so the agent's external-engine path can be tested where zapret cannot be
//! installed. The argument model is `veil-desync`'s, in
//! [`ParseMode::Process`].
//!
//! Environment:
//! - `VEIL_STANDIN_DUMP=PATH`: after a successful start, the parsed command
//!   line is written there as JSON (atomically: temp file, then rename).
//! - `VEIL_STANDIN_WINDIVERT_ERROR=CODE` (winws only): fail opening the
//!   WinDivert filter with this Win32 error code, as winws would.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use veil_desync::args::{self, ArgsError, ParseMode};
use veil_desync::dry_run::{DryRunReport, dry_run};
use veil_desync::spec::{Cidr, Config, IpFamily, PortFilter, Profile};

/// The version the stand-ins report (zapret's `github version vX (hash)` line).
pub const STANDIN_VERSION: &str = "v72.12-veil-standin";

/// Env var naming the JSON dump file.
pub const DUMP_ENV: &str = "VEIL_STANDIN_DUMP";

/// Env var with the WinDivert error code winws-standin fails with.
pub const WINDIVERT_ERROR_ENV: &str = "VEIL_STANDIN_WINDIVERT_ERROR";

/// Which program is played.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Nfqws,
    Winws,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Nfqws => "nfqws",
            Program::Winws => "winws",
        }
    }

    /// Options the other platform's build does not have (getopt refuses them).
    fn foreign_option(self, name: &str) -> bool {
        const LINUX_ONLY: &[&str] = &[
            "qnum",
            "dpi-desync-fwmark",
            "bind-fix4",
            "bind-fix6",
            "user",
            "uid",
        ];
        const WINDOWS_ONLY: &[&str] = &["ssid-filter", "nlm-filter", "nlm-list"];
        const BSD_ONLY: &[&str] = &["port", "dpi-desync-sockarg"];
        BSD_ONLY.contains(&name)
            || match self {
                Program::Nfqws => name.starts_with("wf-") || WINDOWS_ONLY.contains(&name),
                Program::Winws => LINUX_ONLY.contains(&name),
            }
    }
}

/// Runs the stand-in with `argv` (without the program name) and returns the
/// exit code; when the engine "starts" it never returns (SIGTERM ends it).
pub fn run(program: Program, argv: &[String]) -> i32 {
    // Like zapret, the version line comes first whatever follows.
    println!("github version {STANDIN_VERSION} (standin)\n");
    if argv.is_empty() {
        eprintln!(
            "{}: no options given (see --help of the real program)",
            program.name()
        );
        return 1;
    }
    if argv.iter().any(|a| a == "--version") {
        return 0;
    }
    if let Some(opt) = argv.iter().find_map(|a| {
        let name = a.strip_prefix("--")?.split('=').next()?;
        program.foreign_option(name).then_some(a)
    }) {
        eprintln!("{}: unrecognized option '{opt}'", program.name());
        return 1;
    }
    let report = match dry_run(argv, ParseMode::Process) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("{}", error_line(program, argv, &e));
            return 1;
        }
    };
    if let Err(message) = check(program, argv, &report.config) {
        eprintln!("{message}");
        return 1;
    }
    if report.config.globals.dry_run {
        println!("{report}");
        println!("command line parameters verified");
        return 0;
    }
    if program == Program::Winws
        && let Ok(code) = std::env::var(WINDIVERT_ERROR_ENV)
    {
        return windivert_failure(&code);
    }
    if let Ok(path) = std::env::var(DUMP_ENV)
        && let Err(e) = write_dump(Path::new(&path), program, argv, &report)
    {
        eprintln!("cannot write {path}: {e}");
        return 1;
    }
    match program {
        Program::Nfqws => println!(
            "we have {} user defined desync profile(s) and default low priority profile 0",
            report.config.profiles.len()
        ),
        Program::Winws => println!("windivert initialized. capture is started."),
    }
    match program {
        // nfqws binds its queue; this one passes every packet untouched (as
        // nfqws does with a flow no profile takes), so capture rules and the
        // agent's wait for the bound queue behave as with the real one.
        Program::Nfqws => match pass_through(report.config.globals.qnum) {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("error during nfq_create_queue(): {e}");
                1
            }
        },
        // A daemon's life: nothing to do until SIGTERM's default action ends it.
        Program::Winws => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

/// Binds NFQUEUE `qnum` and accepts every packet until the process ends.
fn pass_through(qnum: u16) -> std::io::Result<std::convert::Infallible> {
    let mut queue = nfq::Queue::open()?;
    queue.bind(qnum)?;
    loop {
        let mut message = queue.recv()?;
        message.set_verdict(nfq::Verdict::Accept);
        queue.verdict(message)?;
    }
}

/// The error as zapret would put it: glibc getopt's line (whole argument)
/// for an unknown option, the parser's message (naming the argument, option
/// and profile) otherwise.
fn error_line(program: Program, argv: &[String], e: &ArgsError) -> String {
    match e {
        ArgsError::UnknownOption { at } => format!(
            "{}: unrecognized option '{}'\n{e}",
            program.name(),
            argv.get(at.index)
                .map_or(at.option.as_str(), String::as_str)
        ),
        _ => e.to_string(),
    }
}

/// Checks zapret does after parsing, plus the stand-in's stricter file rule
/// (the agent never writes an empty list).
fn check(program: Program, argv: &[String], config: &Config) -> Result<(), String> {
    // The model cannot tell `--qnum=0` from no `--qnum`; the command line can.
    let has_qnum = argv
        .iter()
        .any(|a| a == "--qnum" || a.starts_with("--qnum="));
    match program {
        Program::Nfqws if !has_qnum => {
            return Err("Need queue number (--qnum)".to_owned());
        }
        Program::Winws
            if !config.globals.agent_owned.iter().any(|a| {
                ["--wf-tcp=", "--wf-udp=", "--wf-raw=", "--wf-raw-part="]
                    .iter()
                    .any(|p| a.starts_with(p))
            }) =>
        {
            return Err(
                "windivert filter : must specify port or/and partial raw filter".to_owned(),
            );
        }
        _ => {}
    }
    for p in &config.profiles {
        let files = p
            .hosts
            .include_files
            .iter()
            .chain(&p.hosts.exclude_files)
            .chain(&p.ips.include_files)
            .chain(&p.ips.exclude_files);
        for f in files {
            let empty = std::fs::metadata(f).map(|m| m.len() == 0).unwrap_or(true);
            if empty {
                return Err(format!(
                    "profile {}: list file '{}' is empty",
                    p.number,
                    f.display()
                ));
            }
        }
    }
    Ok(())
}

/// winws's failure to open the WinDivert filter: its message, then exit
/// with the Win32 error code (the OS keeps the low 8 bits on Linux).
fn windivert_failure(code: &str) -> i32 {
    let code: i32 = code.trim().parse().unwrap_or(5);
    let text = match code {
        5 => "Access is denied.",
        577 => {
            "Windows cannot verify the digital signature for this file. A recent hardware or software change might have installed a file that is signed incorrectly or damaged, or that might be malicious software from an unknown source."
        }
        654 => "An attempt was made to load a different product version of the WinDivert driver.",
        1275 => "This driver has been blocked from loading.",
        1753 => "There are no more endpoints available from the endpoint mapper.",
        _ => "Unknown error.",
    };
    eprintln!("windivert: error opening filter: {text} (win32 error {code})");
    if code == 577 {
        eprintln!("windivert: try to disable secure boot and install OS patches");
    }
    code
}

fn write_dump(
    path: &Path,
    program: Program,
    argv: &[String],
    report: &DryRunReport,
) -> std::io::Result<()> {
    let value = dump(program, argv, &report.config);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&value)?)?;
    std::fs::rename(&tmp, path)
}

/// The parsed command line as JSON, for tests to assert on.
pub fn dump(program: Program, argv: &[String], config: &Config) -> Value {
    let g = &config.globals;
    json!({
        "program": program.name(),
        "pid": std::process::id(),
        "argv": argv,
        "globals": {
            "qnum": g.qnum,
            "fwmark": g.fwmark,
            "dryRun": g.dry_run,
            "debug": g.debug,
            "agentOwned": g.agent_owned,
        },
        "profiles": config.profiles.iter().map(profile).collect::<Vec<_>>(),
        "builtinCompatible": config.profiles.iter().all(args::builtin_compatible),
    })
}

fn profile(p: &Profile) -> Value {
    let d = &p.desync;
    let cidrs = |c: &[Cidr]| {
        c.iter()
            .map(|c| format!("{}/{}", c.addr, c.prefix))
            .collect::<Vec<_>>()
    };
    let mut fooling = Vec::new();
    if d.fooling.badsum {
        fooling.push("badsum");
    }
    if d.fooling.badseq {
        fooling.push("badseq");
    }
    json!({
        "number": p.number,
        "l3": p.l3.map(|f| match f { IpFamily::V4 => "ipv4", IpFamily::V6 => "ipv6" }),
        "tcp": p.tcp.as_ref().map(ports),
        "udp": p.udp.as_ref().map(ports),
        "l7": p.l7.iter().map(|l| format!("{l:?}").to_lowercase()).collect::<Vec<_>>(),
        "hostlists": p.hosts.include_files,
        "hostlistDomains": p.hosts.include_domains,
        "hostlistsExclude": p.hosts.exclude_files,
        "hostlistExcludeDomains": p.hosts.exclude_domains,
        "ipsets": p.ips.include_files,
        "ipsetIps": cidrs(&p.ips.include),
        "ipsetsExclude": p.ips.exclude_files,
        "ipsetExcludeIps": cidrs(&p.ips.exclude),
        "desync": {
            "fake": d.fake,
            "split": d.split.map(|s| s.to_string()),
            "splitPos": d.split_pos.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ttl": d.ttl,
            "ttl6": d.ttl6,
            "fooling": fooling,
            "badseqIncrement": d.badseq_increment,
            "repeats": d.repeats,
            "fakeTlsBytes": d.fake_tls.as_ref().map(Vec::len),
            "fakeHttpBytes": d.fake_http.as_ref().map(Vec::len),
            "cutoff": d.cutoff.map(|l| l.to_string()),
            "start": d.start.map(|l| l.to_string()),
            "anyProtocol": d.any_protocol,
        },
        "external": p.external,
    })
}

fn ports(f: &PortFilter) -> String {
    f.to_string()
}
