use super::*;

fn profile(tcp: Option<(bool, &[(u16, u16)])>, udp: Option<(bool, &[(u16, u16)])>) -> Profile {
    let filter = |(negate, ranges): (bool, &[(u16, u16)])| PortFilter {
        negate,
        ranges: ranges.to_vec(),
    };
    Profile {
        number: 1,
        tcp: tcp.map(filter),
        udp: udp.map(filter),
        ..Profile::default()
    }
}

const MARK: u32 = 0x4000_0000;
const TAIL: &str = "-m connbytes --connbytes-dir original --connbytes-mode packets --connbytes 1:6 \
                    -m mark ! --mark 0x40000000/0x40000000 -j NFQUEUE --queue-num 200 --queue-bypass";

#[test]
fn the_union_of_port_filters_is_sorted_merged_and_split_by_protocol() {
    let profiles = [
        profile(Some((false, &[(443, 443)])), None),
        profile(
            Some((false, &[(80, 80), (444, 450)])),
            Some((false, &[(443, 443)])),
        ),
        profile(None, Some((false, &[(50000, 50100)]))),
    ];
    let capture = Capture::of(&profiles);
    assert_eq!(capture.tcp, Ports::Ranges(vec![(80, 80), (443, 450)]));
    assert_eq!(capture.udp, Ports::Ranges(vec![(443, 443), (50000, 50100)]));
    assert_eq!(
        chain_rules(&capture, 200, MARK),
        vec![
            format!("-A VEIL_ZAPRET -p tcp -m multiport --dports 80,443:450 {TAIL}"),
            format!("-A VEIL_ZAPRET -p udp -m multiport --dports 443,50000:50100 {TAIL}"),
        ]
    );
}

#[test]
fn star_and_negated_filters_capture_the_whole_protocol() {
    let star = [profile(Some((false, &[(0, 65535)])), None)];
    let negated = [
        profile(Some((false, &[(443, 443)])), None),
        profile(None, Some((true, &[(53, 53)]))),
    ];
    assert_eq!(Capture::of(&star).tcp, Ports::All);
    assert_eq!(Capture::of(&star).udp, Ports::Nothing);
    assert_eq!(Capture::of(&negated).udp, Ports::All);
    assert_eq!(
        chain_rules(&Capture::of(&negated), 200, MARK),
        vec![
            format!("-A VEIL_ZAPRET -p tcp -m multiport --dports 443 {TAIL}"),
            format!("-A VEIL_ZAPRET -p udp {TAIL}"),
        ]
    );
}

#[test]
fn a_profile_without_port_filters_captures_both_protocols() {
    let capture = Capture::of(&[profile(None, None)]);
    assert_eq!((capture.tcp, capture.udp), (Ports::All, Ports::All));
}

#[test]
fn multiport_lists_hold_at_most_fifteen_ports_counting_a_range_as_two() {
    // 14 single ports, then a range (would make 16), then 3 more ports.
    let mut ranges: Vec<(u16, u16)> = (1..=14).map(|i| (i * 10, i * 10)).collect();
    ranges.push((1000, 2000));
    ranges.extend([(3000, 3000), (3002, 3002), (3004, 3004)]);
    let capture = Capture::of(&[profile(Some((false, &ranges)), None)]);
    let rules = chain_rules(&capture, 201, 0x10);
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert!(
        rules[0].contains("--dports 10,20,30,40,50,60,70,80,90,100,110,120,130,140 -m connbytes")
    );
    assert!(rules[1].contains("--dports 1000:2000,3000,3002,3004 -m connbytes"));
    assert!(
        rules[1].ends_with("-m mark ! --mark 0x10/0x10 -j NFQUEUE --queue-num 201 --queue-bypass")
    );
}

#[test]
fn nothing_to_capture_means_no_rule() {
    assert!(Capture::of(&[]).is_empty());
    assert!(chain_rules(&Capture::default(), 200, MARK).is_empty());
}

#[test]
fn the_candidate_slot_takes_only_probe_marked_packets_that_no_engine_sent() {
    let capture = Capture::of(&[profile(Some((false, &[(443, 443)])), None)]);
    assert_eq!(
        side_rules(&capture, 202, MARK, 0x0800_0000),
        vec![
            "-A VEIL_ZAPRET -p tcp -m multiport --dports 443 -m connbytes --connbytes-dir original \
             --connbytes-mode packets --connbytes 1:6 -m mark --mark 0x8000000/0x48000000 \
             -j NFQUEUE --queue-num 202 --queue-bypass"
        ]
    );
}

#[test]
fn applying_declares_the_chain_and_replaces_every_existing_jump_by_one() {
    let rules = vec!["-A VEIL_ZAPRET -p tcp -j NFQUEUE --queue-num 200 --queue-bypass".to_owned()];
    let fresh = restore_apply(&rules, Installed::default());
    assert_eq!(
        fresh,
        "*mangle\n:VEIL_ZAPRET - [0:0]\n-F VEIL_ZAPRET\n-I POSTROUTING 1 -j VEIL_ZAPRET\n\
         -A VEIL_ZAPRET -p tcp -j NFQUEUE --queue-num 200 --queue-bypass\nCOMMIT\n"
    );
    let leftovers = restore_apply(
        &rules,
        Installed {
            chain: true,
            jumps: 2,
        },
    );
    assert_eq!(
        leftovers,
        "*mangle\n:VEIL_ZAPRET - [0:0]\n-F VEIL_ZAPRET\n-D POSTROUTING -j VEIL_ZAPRET\n\
         -D POSTROUTING -j VEIL_ZAPRET\n-I POSTROUTING 1 -j VEIL_ZAPRET\n\
         -A VEIL_ZAPRET -p tcp -j NFQUEUE --queue-num 200 --queue-bypass\nCOMMIT\n"
    );
}

#[test]
fn removing_deletes_jumps_then_flushes_and_deletes_the_chain() {
    assert_eq!(restore_remove(Installed::default()), None);
    assert_eq!(
        restore_remove(Installed {
            chain: true,
            jumps: 1
        })
        .as_deref(),
        Some("*mangle\n-D POSTROUTING -j VEIL_ZAPRET\n-F VEIL_ZAPRET\n-X VEIL_ZAPRET\nCOMMIT\n")
    );
}

#[test]
fn installed_state_is_read_from_iptables_save() {
    let save = "# Generated by iptables-save v1.8.9\n*mangle\n:PREROUTING ACCEPT [0:0]\n\
                :POSTROUTING ACCEPT [0:0]\n:VEIL_ZAPRET - [0:0]\n-A POSTROUTING -j VEIL_ZAPRET\n\
                -A POSTROUTING -o eth0 -j MARK --set-mark 1\n-A POSTROUTING -j VEIL_ZAPRET\n\
                -A VEIL_ZAPRET -p tcp -j NFQUEUE --queue-num 200 --queue-bypass\nCOMMIT\n";
    assert_eq!(
        Installed::from_save(save),
        Installed {
            chain: true,
            jumps: 2
        }
    );
    assert_eq!(
        Installed::from_save("*mangle\nCOMMIT\n"),
        Installed::default()
    );
}
