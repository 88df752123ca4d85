//! The probe rounds below `veil-operator get strategy NAME -o wide`: every
//! sample of each node's latest round, one line each.

use serde_json::Value;

use super::table::align;

/// A table of the samples in `rounds` (the admin API's `rounds` array),
/// headed `LAST PROBE ROUND`; a line saying there is none when it is empty.
pub fn render(rounds: &[Value]) -> String {
    if rounds.is_empty() {
        return "\nNo probe round stored yet (rounds arrive with the agents' reports).\n"
            .to_owned();
    }
    let mut rows = vec![
        [
            "NODE",
            "FINISHED",
            "SCORE",
            "TARGET",
            "RESULT",
            "FAILPHASE",
            "TTFB",
            "BYTES",
            "DETAIL",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for round in rounds {
        let node = text(round, "node");
        let finished = text(round, "finishedAt");
        let score = round["score"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"));
        for sample in round["samples"].as_array().into_iter().flatten() {
            let passed = sample["passed"].as_bool().unwrap_or(false);
            let critical = sample["critical"].as_bool().unwrap_or(false);
            let result = match (passed, critical) {
                (true, _) => "pass",
                (false, true) => "FAIL (critical)",
                (false, false) => "FAIL",
            };
            rows.push(vec![
                node.clone(),
                finished.clone(),
                score.clone(),
                text(sample, "target"),
                result.to_owned(),
                or_dash(text(sample, "failPhase")),
                sample["ttfbMs"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms")),
                sample["bytes"].as_u64().unwrap_or(0).to_string(),
                text(sample, "detail"),
            ]);
        }
    }
    format!("\nLAST PROBE ROUND\n{}", align(&rows))
}

fn text(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_default().to_owned()
}

fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_sample_of_each_nodes_round_is_a_line() {
        let rounds = [
            json!({"node": "node-a", "finishedAt": "2026-12-07T06:40:00Z", "score": 0.4125, "samples": [
                {"target": "https://www.youtube.com/generate_204", "critical": true, "passed": true, "ttfbMs": 120, "bytes": 0},
                {"target": "https://video.example/ (TLS 1.3)", "passed": false, "failPhase": "Stall16K", "ttfbMs": 30, "bytes": 16384, "detail": "no data for 10 s"},
            ]}),
            json!({"node": "node-b", "finishedAt": "2026-12-07T06:41:00Z", "samples": [
                {"target": "udp://stun.example:3478", "critical": true, "passed": false, "failPhase": "Timeout", "bytes": 0},
            ]}),
        ];
        let table = render(&rounds);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .skip(2)
            .map(|l| {
                l.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            lines,
            [
                vec![
                    "NODE",
                    "FINISHED",
                    "SCORE",
                    "TARGET",
                    "RESULT",
                    "FAILPHASE",
                    "TTFB",
                    "BYTES",
                    "DETAIL"
                ],
                vec![
                    "node-a",
                    "2026-12-07T06:40:00Z",
                    "0.41",
                    "https://www.youtube.com/generate_204",
                    "pass",
                    "-",
                    "120ms",
                    "0"
                ],
                vec![
                    "node-a",
                    "2026-12-07T06:40:00Z",
                    "0.41",
                    "https://video.example/ (TLS 1.3)",
                    "FAIL",
                    "Stall16K",
                    "30ms",
                    "16384",
                    "no data for 10 s"
                ],
                vec![
                    "node-b",
                    "2026-12-07T06:41:00Z",
                    "-",
                    "udp://stun.example:3478",
                    "FAIL (critical)",
                    "Timeout",
                    "-",
                    "0"
                ],
            ]
        );
        assert!(table.starts_with("\nLAST PROBE ROUND\n"), "{table}");
        assert!(render(&[]).contains("No probe round stored yet"));
    }
}
