use super::*;

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|&a| a.to_owned()).collect()
}

#[test]
fn the_capture_filter_is_the_union_of_the_profiles_ports() {
    let capture = Capture {
        tcp: Ports::Ranges(vec![(80, 80), (443, 443), (1000, 2000)]),
        udp: Ports::All,
    };
    let profiles = s(&["--filter-tcp=80,443", "--new", "--filter-udp=*"]);
    assert_eq!(
        argv(&capture, &profiles),
        s(&[
            "--wf-tcp=80,443,1000-2000",
            "--wf-udp=1-65535",
            "--filter-tcp=80,443",
            "--new",
            "--filter-udp=*",
        ])
    );
    let tcp_only = Capture {
        tcp: Ports::Ranges(vec![(443, 443)]),
        udp: Ports::Nothing,
    };
    assert_eq!(argv(&tcp_only, &[]), s(&["--wf-tcp=443"]));
}

#[test]
fn every_known_windivert_code_has_advice_that_says_what_to_do() {
    assert!(advice(5).unwrap().contains("Administrator"));
    assert!(advice(577).unwrap().contains("signature"));
    assert!(advice(654).unwrap().contains("another WinDivert version"));
    assert!(advice(654).unwrap().contains("GoodbyeDPI"));
    assert!(advice(1275).unwrap().contains("security software"));
    assert!(advice(1753).unwrap().contains("Base Filtering Engine"));
    assert_eq!(advice(2), None);
}

#[test]
fn the_code_is_found_in_the_message_text_in_a_code_marker_or_in_the_exit_code() {
    let denied = s(&[
        "github version v72.12",
        "windivert: error opening filter: Access is denied.",
    ]);
    assert_eq!(error_code(Some(1), &denied), Some(5));
    let blocked =
        s(&["windivert: error opening filter: This driver has been blocked from loading"]);
    assert_eq!(error_code(None, &blocked), Some(1275));
    assert_eq!(
        error_code(None, &s(&["open failed, win32 error 1753"])),
        Some(1753)
    );
    assert_eq!(error_code(Some(654), &s(&["something else"])), Some(654));
    assert_eq!(error_code(Some(1), &s(&["unknown option --foo"])), None);
}

#[test]
fn the_failure_message_is_the_advice_or_else_the_engines_last_line() {
    let text = failure_message(
        Some(1),
        &s(&[
            "windivert: error opening filter: Windows cannot verify the digital signature for this file.",
        ]),
    );
    assert!(text.starts_with("WinDivert error 577: "), "{text}");
    assert_eq!(
        failure_message(Some(1), &s(&["bad value of --dpi-desync", ""])),
        "bad value of --dpi-desync"
    );
}
