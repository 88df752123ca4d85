//! `--dry-run`: parse, load every list and payload once, and say what would
//! run — what `veil-agent desync --dry-run` and the nfqws stand-in print
//! before exiting 0. Nothing is bound or sent.

use std::fmt;
use std::path::Path;

use crate::args::{self, ArgsError, At, ParseMode};
use crate::lists::{ListError, ProfileLists};
use crate::spec::{
    Config, Desync, Fooling, IpFamily, Limit, Marker, PortFilter, Profile, SplitMode, SplitPos,
};

/// The parsed command line and the number of entries each profile's lists
/// hold (host include, host exclude, address include, address exclude).
#[derive(Debug)]
pub struct DryRunReport {
    pub config: Config,
    pub list_entries: Vec<(usize, usize, usize, usize)>,
}

/// Parses `argv` in `mode` and loads every list file. In
/// [`ParseMode::Validate`] no file is read, so lists count as empty.
pub fn dry_run(argv: &[String], mode: ParseMode) -> Result<DryRunReport, ArgsError> {
    let config = args::parse(argv, mode)?;
    let mut list_entries = Vec::with_capacity(config.profiles.len());
    for profile in &config.profiles {
        if mode == ParseMode::Validate {
            list_entries.push((0, 0, 0, 0));
            continue;
        }
        let lists = ProfileLists::load(profile).map_err(|source| ArgsError::List {
            at: locate(argv, profile.number, &source),
            source,
        })?;
        list_entries.push(lists.counts());
    }
    Ok(DryRunReport {
        config,
        list_entries,
    })
}

/// Options whose value is a list file.
const LIST_OPTIONS: &[&str] = &[
    "--hostlist",
    "--hostlist-exclude",
    "--ipset",
    "--ipset-exclude",
];

/// Finds the argument that named the failing list file in `profile`.
fn locate(argv: &[String], profile: usize, error: &ListError) -> At {
    let path = match error {
        ListError::Io { path, .. } | ListError::Gzip { path } | ListError::BadLine { path, .. } => {
            path.as_path()
        }
    };
    let mut number = 1;
    for (i, arg) in argv.iter().enumerate() {
        if arg == "--new" {
            number += 1;
            continue;
        }
        if number != profile {
            continue;
        }
        let (option, value) = match arg.split_once('=') {
            Some((o, v)) => (o, Some(v.to_owned())),
            None => (arg.as_str(), argv.get(i + 1).cloned()),
        };
        if LIST_OPTIONS.contains(&option) && value.as_deref().map(Path::new) == Some(path) {
            return At {
                index: i,
                option: option.to_owned(),
                profile,
            };
        }
    }
    At {
        index: 0,
        option: "--hostlist/--ipset".to_owned(),
        profile,
    }
}

impl fmt::Display for DryRunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.config.globals;
        writeln!(f, "queue {} fwmark {:#x}", g.qnum, g.fwmark)?;
        for (p, counts) in self.config.profiles.iter().zip(&self.list_entries) {
            write_profile(f, p, *counts)?;
        }
        write!(f, "{} profile(s) verified", self.config.profiles.len())
    }
}

fn write_profile(
    f: &mut fmt::Formatter<'_>,
    p: &Profile,
    (hi, he, ii, ie): (usize, usize, usize, usize),
) -> fmt::Result {
    let l3 = match p.l3 {
        None => "ipv4+ipv6",
        Some(IpFamily::V4) => "ipv4",
        Some(IpFamily::V6) => "ipv6",
    };
    write!(
        f,
        "profile {}: {l3} tcp {} udp {}",
        p.number,
        ports(p.tcp.as_ref(), p.udp.is_none()),
        ports(p.udp.as_ref(), p.tcp.is_none())
    )?;
    if !p.l7.is_empty() {
        let l7: Vec<String> =
            p.l7.iter()
                .map(|l| format!("{l:?}").to_lowercase())
                .collect();
        write!(f, " l7 {}", l7.join(","))?;
    }
    let h = &p.hosts;
    if h.has_include() || !h.exclude_files.is_empty() || !h.exclude_domains.is_empty() {
        write!(
            f,
            "; hosts {} list(s) +{hi} -{he}",
            h.include_files.len() + h.exclude_files.len()
        )?;
    }
    let ips = &p.ips;
    if !ips.include_files.is_empty()
        || !ips.include.is_empty()
        || !ips.exclude_files.is_empty()
        || !ips.exclude.is_empty()
    {
        write!(
            f,
            "; ipsets {} list(s) +{} -{}",
            ips.include_files.len() + ips.exclude_files.len(),
            ii + ips.include.len(),
            ie + ips.exclude.len()
        )?;
    }
    write!(f, "; {}", desync(&p.desync))?;
    if !p.external.is_empty() {
        write!(f, "; nfqws only: {}", p.external.join(" "))?;
    }
    writeln!(f)
}

/// A port filter as written; an absent filter is "any" when the other
/// protocol has none either (nfqws), "none" otherwise.
fn ports(filter: Option<&PortFilter>, other_absent: bool) -> String {
    match filter {
        Some(filter) => filter.to_string(),
        None if other_absent => "any".to_owned(),
        None => "none".to_owned(),
    }
}

fn desync(d: &Desync) -> String {
    if !d.is_active() {
        return "no desync".to_owned();
    }
    let mut modes = Vec::new();
    if d.fake {
        modes.push("fake".to_owned());
    }
    if let Some(split) = d.split {
        modes.push(split.to_string());
    }
    let mut out = format!("desync {}", modes.join(","));
    if d.split.is_some() {
        let pos: Vec<String> = d.split_pos.iter().map(ToString::to_string).collect();
        out += &format!(" pos {}", pos.join(","));
    }
    if let Some(ttl) = d.ttl {
        out += &format!(" ttl {ttl}");
    }
    if let Some(ttl6) = d.ttl6 {
        out += &format!(" ttl6 {ttl6}");
    }
    let Fooling { badsum, badseq } = d.fooling;
    if badsum || badseq {
        let names: Vec<&str> = [(badsum, "badsum"), (badseq, "badseq")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        out += &format!(" fooling {}", names.join(","));
    }
    if d.repeats != 1 {
        out += &format!(" repeats {}", d.repeats);
    }
    if let Some(l) = d.start {
        out += &format!(" start {l}");
    }
    if let Some(l) = d.cutoff {
        out += &format!(" cutoff {l}");
    }
    for (name, fake) in [("tls", &d.fake_tls), ("http", &d.fake_http)] {
        if let Some(bytes) = fake {
            out += &format!(" fake-{name} {} bytes", bytes.len());
        }
    }
    if d.any_protocol {
        out += " any-protocol";
    }
    out
}

/// nfqws syntax: `80,443,1000-2000`, `*`, `~80`.
impl fmt::Display for PortFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negate {
            f.write_str("~")?;
        }
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (lo, hi) {
                (0, u16::MAX) => f.write_str("*")?,
                (lo, hi) if lo == hi => write!(f, "{lo}")?,
                (lo, hi) => write!(f, "{lo}-{hi}")?,
            }
        }
        Ok(())
    }
}

/// The canonical nfqws mode name.
impl fmt::Display for SplitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SplitMode::Multisplit => "multisplit",
            SplitMode::Multidisorder => "multidisorder",
            SplitMode::Fakedsplit => "fakedsplit",
            SplitMode::Fakeddisorder => "fakeddisorder",
        })
    }
}

/// nfqws syntax: `2`, `-10`, `midsld`, `host+1`, `endhost-2`.
impl fmt::Display for SplitPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.marker {
            Marker::Absolute => return write!(f, "{}", self.offset),
            Marker::Method => "method",
            Marker::Host => "host",
            Marker::EndHost => "endhost",
            Marker::Sld => "sld",
            Marker::EndSld => "endsld",
            Marker::MidSld => "midsld",
            Marker::SniExt => "sniext",
        };
        match self.offset {
            0 => f.write_str(name),
            o if o > 0 => write!(f, "{name}+{o}"),
            o => write!(f, "{name}{o}"),
        }
    }
}

/// nfqws syntax: `n3`, `d1`, `s4000`.
impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Packets(n) => write!(f, "n{n}"),
            Limit::DataPackets(n) => write!(f, "d{n}"),
            Limit::Seq(n) => write!(f, "s{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn summary_names_profiles_filters_and_desync() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("hosts.txt");
        std::fs::write(&list, "blocked.test\nother.test\n").unwrap();
        let report = dry_run(
            &argv(&[
                "--qnum=200",
                "--filter-tcp=443",
                "--filter-l7=tls",
                &format!("--hostlist={}", list.display()),
                "--dpi-desync=fake,multisplit",
                "--dpi-desync-split-pos=1,midsld",
                "--dpi-desync-ttl=4",
                "--new",
                "--filter-udp=443",
                "--dpi-desync=fake",
                "--dpi-desync-repeats=6",
            ]),
            ParseMode::Builtin,
        )
        .unwrap();
        let text = report.to_string();
        let expected = "queue 200 fwmark 0x40000000\n\
            profile 1: ipv4+ipv6 tcp 443 udp none l7 tls; hosts 1 list(s) +2 -0; desync fake,multisplit pos 1,midsld ttl 4\n\
            profile 2: ipv4+ipv6 tcp none udp 443; desync fake repeats 6\n\
            2 profile(s) verified";
        assert_eq!(text, expected);
    }

    #[test]
    fn values_print_back_in_nfqws_syntax() {
        let args: Vec<String> = [
            "--filter-tcp=80,443,1000-2000",
            "--filter-udp=~5000-6000",
            "--dpi-desync=fake,fakeddisorder",
            "--dpi-desync-split-pos=2,-10,method,host+1,endhost-2,sld,endsld,midsld,sniext+1",
            "--dpi-desync-cutoff=d3",
            "--dpi-desync-start=s4000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let config = crate::args::parse(&args, ParseMode::Validate).unwrap();
        let p = &config.profiles[0];
        let d = &p.desync;
        let pos: Vec<String> = d.split_pos.iter().map(ToString::to_string).collect();
        let printed = [
            format!("--filter-tcp={}", p.tcp.as_ref().unwrap()),
            format!("--filter-udp={}", p.udp.as_ref().unwrap()),
            format!("--dpi-desync=fake,{}", d.split.unwrap()),
            format!("--dpi-desync-split-pos={}", pos.join(",")),
            format!("--dpi-desync-cutoff={}", d.cutoff.unwrap()),
            format!("--dpi-desync-start={}", d.start.unwrap()),
        ];
        assert_eq!(printed.as_slice(), args.as_slice());
    }

    #[test]
    fn a_malformed_list_is_blamed_on_its_argument() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.txt");
        let bad = dir.path().join("bad.txt");
        std::fs::write(&ok, "192.0.2.1\n").unwrap();
        std::fs::write(&bad, "192.0.2.1\nnot-an-address\n").unwrap();
        let err = dry_run(
            &argv(&[
                "--filter-tcp=80",
                "--ipset",
                ok.to_str().unwrap(),
                "--new",
                "--filter-tcp=443",
                "--ipset",
                bad.to_str().unwrap(),
            ]),
            ParseMode::External,
        )
        .unwrap_err();
        assert_eq!(
            (err.index(), err.option(), err.profile()),
            (Some(5), Some("--ipset"), Some(2)),
            "{err}"
        );
        assert!(err.to_string().contains("bad.txt:2"), "{err}");
    }
}
