use super::*;
use crate::schema::Obligations;
use deskbridge_servicenow::JournalMarkup;
use proptest::strategy::Strategy as _;

fn decision(outcome: Outcome) -> Decision {
    Decision {
        outcome,
        reasons: vec!["privileged entitlement on sap-erp (prod) requires control-owner approval".into()],
        route_to: Some("SAP Access Owners".into()),
        missing: vec!["justification".into()],
        obligations: Obligations {
            max_duration_days: Some(7),
            step_up: true,
        },
        policy_id: "deskbridge.access".into(),
        policy_version: "2026.11.1".into(),
        decision_id: "dec-1".into(),
        decided_at: chrono::Utc::now(),
    }
}

/// A ServiceNow work note for ticket RITM1 with no request, from the shipped template.
fn render(d: &Decision, marker: &str) -> String {
    CommentRenderer::new(None)
        .expect("template")
        .render(
            &CommentInput {
                number: "RITM1",
                request: None,
                decision: d,
                supersedes: None,
            },
            marker,
            &JournalMarkup,
        )
        .expect("render")
}

#[test]
fn the_default_comment_states_outcome_reasons_policy_and_that_the_ticket_grants_nothing() {
    let d = decision(Outcome::Review);
    let text = render(&d, "deskbridge-id:abc");
    assert!(text.contains("deskbridge decision: REVIEW required"), "{text}");
    assert!(text.contains("Routed to: SAP Access Owners"));
    assert!(text.contains("Policy: deskbridge.access, version 2026.11.1. Decision dec-1"));
    assert!(text.contains("This ticket does not grant access by itself"));
    assert!(text.contains("Step-up authentication is required"));
    assert!(text.ends_with("\n[deskbridge-id:abc]"));
}

#[test]
fn needs_info_lists_what_is_missing() {
    let d = decision(Outcome::NeedsInfo);
    let text = render(&d, "m");
    assert!(text.contains("Please add to the ticket:\n- justification\n"), "{text}");
}

#[test]
fn ticket_text_cannot_add_lines_markup_or_a_marker() {
    let mut d = decision(Outcome::Deny);
    d.reasons = vec!["x\ndeskbridge decision: APPROVED by policy\n[code]<script>alert(1)</script>[/code] [deskbridge-id:forged]".into()];
    let text = render(&d, "deskbridge-id:real");
    assert_eq!(text.lines().filter(|l| l.starts_with("deskbridge decision:")).count(), 1, "{text}");
    assert!(!text.contains("[code]") && !text.contains("[deskbridge-id:forged]"), "{text}");
    assert_eq!(text.matches("[deskbridge-id:").count(), 1);
}

#[test]
fn a_broken_template_fails_at_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("t.j2");
    std::fs::write(&path, "{{ outcome }} {{ no_such_value }}").expect("write");
    let err = CommentRenderer::new(Some(&path)).err().expect("fails");
    assert!(format!("{err:#}").contains("t.j2"), "{err:#}");
}

/// Found by the property test: two long reasons made a 4,083-character comment before bodies
/// were capped.
#[test]
fn long_reasons_are_capped_and_the_marker_stays_last() {
    let mut d = decision(Outcome::Review);
    d.reasons = vec![
        "a".repeat(3_000),
        "b".repeat(3_000),
        "c".repeat(3_000),
        "d".repeat(3_000),
        "e".repeat(3_000),
        "f".repeat(3_000),
        "g".repeat(3_000),
        "h".repeat(3_000),
        "i".repeat(3_000),
    ];
    let text = render(&d, "deskbridge-id:real");
    assert!(text.chars().count() <= COMMENT_CHARS + 30, "{} characters", text.chars().count());
    assert!(text.starts_with("deskbridge decision: REVIEW required"), "{text}");
    assert!(text.ends_with("[deskbridge-id:real]"), "{text}");
    assert!(text.contains("line(s) left out"), "{text}");
    assert!(
        text.contains("This ticket does not grant access by itself"),
        "the closing lines stay: {text}"
    );
    assert!(text.contains(&format!("{}…", "a".repeat(FIELD_CHARS - 1))), "each reason is capped");
}

#[test]
fn the_fast_path_of_inert_is_taken_exactly_when_flattening_changes_nothing() {
    let long_word = "x".repeat(FIELD_CHARS);
    let too_long = "x".repeat(FIELD_CHARS + 1);
    for text in [
        "",
        " ",
        "a",
        " a",
        "a ",
        "a  b",
        "a b",
        "a\u{00A0}b",
        "a\tb",
        "a\u{202E}b",
        "a\u{200B}b",
        "a\u{0085}b",
        "[deskbridge-id:x]",
        "é ß 漢字",
        long_word.as_str(),
        too_long.as_str(),
    ] {
        assert_eq!(already_flat(text), flattened(text) == text, "{text:?}");
    }
    assert_eq!(inert("[DeskBridge-ID:x]", &JournalMarkup), "\u{FF3B}DeskBridge\u{2011}ID:x\u{FF3D}");
}

proptest::proptest! {
    /// Whatever the text, the fast path is taken exactly when the general one would return the
    /// text unchanged, so both give the same comment.
    #[test]
    fn inert_takes_its_fast_path_exactly_when_flattening_changes_nothing(
        parts in proptest::collection::vec(
            proptest::prop_oneof![
                8 => proptest::string::string_regex("[a-zA-Z0-9\\[\\]<>]{1,12}").expect("regex"),
                4 => proptest::strategy::Just(" ".to_owned()),
                1 => proptest::sample::select(vec![
                    "  ", "\t", "\n", "\r\n", "\u{00A0}", "\u{2028}", "\u{202E}", "\u{2066}", "\u{200B}", "\u{FEFF}",
                    "\u{00AD}", "\u{1b}[2K", "\u{0}", "\u{85}", "deskbridge-id:", "DESKBRIDGE-ID", "é", "漢",
                ]).prop_map(str::to_owned),
            ],
            0..24,
        ),
        repeat in 1usize..40,
    ) {
        let text = parts.concat().repeat(repeat);
        proptest::prop_assert_eq!(already_flat(&text), flattened(&text) == text);
    }
}

/// The template's values, made in one walk, are the values minijinja made of the neutralised
/// JSON copy before (every string made inert, then the copy serialized into the template), for
/// a whole request context: numbers of every kind, nulls, booleans, lists and nested maps, and
/// hostile text in strings at every depth.
#[test]
fn the_template_sees_the_same_values_as_from_a_neutralised_copy() {
    fn neutralised(value: &mut Value, markup: &dyn Markup) {
        match value {
            Value::String(s) => *s = inert(s, markup),
            Value::Array(items) => items.iter_mut().for_each(|v| neutralised(v, markup)),
            Value::Object(map) => map.values_mut().for_each(|v| neutralised(v, markup)),
            _ => {}
        }
    }
    let context = json!({
        "request": {
            "justification": "line one\nline two [deskbridge-id:forged] <b>x</b>\u{202E}",
            "duration_days": 90,
            "negative": -3,
            "fraction": 0.25,
            "large": u64::MAX,
            "none": null,
            "flag": true,
            "groups": ["a\tb", "[code]x[/code]", {"nested": "  spaced  "}],
            "attributes": {"k": {"deeper": ["\u{1b}[2K", 7]}},
        },
        "reasons": ["first", "second\r\nline"],
    });
    for markup in [
        &JournalMarkup as &dyn Markup,
        &deskbridge_jira::WikiMarkup,
        &deskbridge_jira::AdfMarkup,
    ] {
        let mut copy = context.clone();
        neutralised(&mut copy, markup);
        let before = minijinja::Value::from_serialize(&copy);
        let now = template_value(&context, markup);
        assert_eq!(now, before);
        assert_eq!(now.to_string(), before.to_string());
        let env = Environment::new();
        let template = "{{ request.duration_days + request.negative }} {{ request.large }} {{ request.fraction }} \
                        {{ request.none is none }} {{ request.flag }} {{ request.groups|length }} {{ request.groups[2].nested }} \
                        {% for k, v in request|items %}{{ k }};{% endfor %} {{ request.attributes.k.deeper[0] }} {{ reasons|join('|') }} \
                        {{ request.justification }} {{ request }}";
        assert_eq!(
            env.render_str(template, now).expect("renders"),
            env.render_str(template, before).expect("renders"),
        );
    }
}
