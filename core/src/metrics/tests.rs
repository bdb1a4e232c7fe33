//! The registry's own output: names, units and label sets as Prometheus expects them
//! (the end-to-end test in `engine/tests/metrics.rs` parses a live engine's answer with a
//! real OpenMetrics parser).

use plue_types::status::{RunStatus, StepStatus};

use super::families::FAMILIES;
use super::{record, Event};

fn encoded() -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &FAMILIES.registry).unwrap();
    text
}

#[test]
fn recorded_events_appear_under_conventional_names() {
    record(Event::StepFinished {
        status: StepStatus::Succeeded,
        kind: "bash",
        seconds: Some(1.5),
    });
    record(Event::RunFinished {
        status: RunStatus::Failed,
    });
    record(Event::Webhook {
        forge: "github",
        result: "accepted",
    });
    record(Event::LogLines(3));
    record(Event::NetworkRefused(2));
    record(Event::ClaimsUnacknowledged(1));
    let text = encoded();
    for expected in [
        "# TYPE plue_steps_finished counter",
        "plue_steps_finished_total{status=\"succeeded\",kind=\"bash\"}",
        "# TYPE plue_step_duration_seconds histogram",
        "# UNIT plue_step_duration_seconds seconds",
        "plue_step_duration_seconds_bucket{le=\"5.12\",status=\"succeeded\",kind=\"bash\"} 1",
        "plue_runs_finished_total{status=\"failed\"}",
        "plue_webhook_deliveries_total{forge=\"github\",result=\"accepted\"}",
        "plue_log_lines_ingested_total",
        "# TYPE plue_network_refused counter",
        "plue_network_refused_total",
        "# TYPE plue_claims_unacknowledged counter",
        "plue_claims_unacknowledged_total",
        "# EOF",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn a_label_value_cannot_break_the_exposition() {
    // Runner labels reach the gauges; quotes, backslashes and newlines must stay escaped.
    record(Event::PodFailed {
        class: "evil\"} plue_leader 1\n",
        reason: "a\\b",
    });
    let text = encoded();
    assert!(
        text.contains(r#"class="evil\"} plue_leader 1\n""#),
        "unescaped label value in\n{text}"
    );
    assert!(!text.lines().any(|line| line == "plue_leader 1"), "{text}");
}

#[test]
fn every_use_of_a_refused_token_is_a_series_from_the_start() {
    let text = super::encode().unwrap();
    for use_ in plue_forge::auth::Use::ALL {
        for result in ["reminted", "refused_again"] {
            let series = format!(
                "plue_forge_token_refusals_total{{use=\"{}\",result=\"{result}\"}}",
                use_.as_str()
            );
            assert!(text.contains(&series), "missing {series} in\n{text}");
        }
    }
}
