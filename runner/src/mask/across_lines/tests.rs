//! The attacker's view: a secret of the step's own, in each spelling the wall knows,
//! printed over two or three lines cut at every position. Before, each line was masked
//! alone and every piece passed (the same spelling whole on one line was masked).

use super::*;
use crate::mask::trie::{hold_at, SHOWN_AT_MOST};

/// A secret with characters that are not hex, long enough for every encoded spelling.
const SECRET: &str = "tok-Kx9Q2mPzW";

fn spellings(secret: &str) -> Vec<(String, String)> {
    plue_outbound::spellings::of(secret)
        .into_iter()
        .map(|(how, text)| (how.to_string(), text))
        .collect()
}

/// The lines `lines` become, pushed one by one, then the end.
fn through(masker: &Masker, lines: &[String]) -> Vec<String> {
    let mut stream = AcrossLines::default();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        stream.push(masker, n, line.clone(), &mut out);
    }
    stream.finish(&mut out);
    let order: Vec<usize> = out.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        order,
        (0..lines.len()).collect::<Vec<_>>(),
        "in order, each once"
    );
    out.into_iter().map(|(_, line)| line).collect()
}

/// No whole spelling in what a reader sees, the lines read with or without their breaks.
fn shows_none(shown: &[String], spelling: &str, context: &str) {
    let spelling = spelling.to_ascii_lowercase();
    for joined in [shown.concat(), shown.join("\n")] {
        let joined = joined.to_ascii_lowercase();
        let bare: String = joined
            .chars()
            .filter(|c| *c != '\n' && *c != '\r')
            .collect();
        assert!(
            !joined.contains(&spelling) && !bare.contains(&spelling),
            "{context}: {shown:?}"
        );
    }
}

/// What a piece of `spelling` ending `spelt` bytes into it shows when released early.
fn first_piece(spelling: &str, spelt: usize) -> String {
    match spelt >= hold_at(spelling.len()) {
        true => MASK.to_owned(),
        false => spelling[..spelt].to_owned(),
    }
}

#[test]
fn each_spelling_split_over_two_lines_at_every_position_is_masked_in_both() {
    let masker = Masker::new([SECRET]);
    for (how, s) in spellings(SECRET) {
        for a in 1..s.len() {
            let lines = [format!("see {}", &s[..a]), format!("{} .", &s[a..])];
            let shown = through(&masker, &lines);
            let context = format!("{how} cut at {a}");
            shows_none(&shown, &s, &context);
            assert_eq!(
                shown,
                [format!("see {}", first_piece(&s, a)), "*** .".to_owned()],
                "{context}"
            );
        }
    }
}

#[test]
fn each_spelling_split_over_three_lines_at_every_position_is_masked_in_each() {
    let masker = Masker::new([SECRET]);
    for (how, s) in spellings(SECRET) {
        for a in 1..s.len() {
            for b in a + 1..s.len() {
                let lines = [
                    format!("see {}", &s[..a]),
                    s[a..b].to_owned(),
                    format!("{} .", &s[b..]),
                ];
                let shown = through(&masker, &lines);
                let context = format!("{how} cut at {a} and {b}");
                shows_none(&shown, &s, &context);
                let middle = match b >= hold_at(s.len()) {
                    true => MASK.to_owned(),
                    false => s[a..b].to_owned(),
                };
                assert_eq!(
                    shown,
                    [
                        format!("see {}", first_piece(&s, a)),
                        middle,
                        "*** .".to_owned()
                    ],
                    "{context}"
                );
            }
        }
    }
}

#[test]
fn line_breaks_inside_lines_and_empty_lines_between_pieces_do_not_hide_a_spelling() {
    // A model's deltas keep their line breaks: `abc\n` then `def` is the spelling cut by a
    // line break, which a reader drops. So are empty lines and a carriage return.
    let masker = Masker::new([SECRET]);
    for (how, s) in spellings(SECRET) {
        for a in 1..s.len() {
            for lines in [
                vec![format!("see {}\n", &s[..a]), format!("{}\n", &s[a..])],
                vec![format!("see {}", &s[..a]), format!("\r\n{} .", &s[a..])],
                vec![
                    format!("see {}", &s[..a]),
                    String::new(),
                    "\n".to_owned(),
                    format!("{} .", &s[a..]),
                ],
            ] {
                let shown = through(&masker, &lines);
                shows_none(&shown, &s, &format!("{how} cut at {a}: {lines:?}"));
            }
        }
    }
}

#[test]
fn a_spelling_one_byte_a_line_shows_its_first_bytes_only() {
    let masker = Masker::new([SECRET]);
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let lines: Vec<String> = hex.chars().map(String::from).collect();
    let shown = through(&masker, &lines);
    shows_none(&shown, &hex, "one byte a line");
    let clear: Vec<&String> = shown.iter().filter(|l| *l != MASK).collect();
    assert_eq!(clear.len(), SHOWN_AT_MOST, "{shown:?}");
    assert_eq!(shown[..SHOWN_AT_MOST].concat(), hex[..SHOWN_AT_MOST]);
}

#[test]
fn a_short_secret_shows_less_than_half_of_itself() {
    // Four bytes: as it is and reversed only; held from its second byte.
    let masker = Masker::new(["k9Zq"]);
    assert_eq!(
        through(&masker, &["x k".into(), "9Zq y".into()]),
        ["x k", "*** y"]
    );
    for s in ["k9Zq", "qZ9k"] {
        for a in 1..s.len() {
            let shown = through(&masker, &[s[..a].to_owned(), s[a..].to_owned()]);
            shows_none(&shown, s, s);
            assert!(a >= 2 || shown[0].len() == 1, "{shown:?}");
            assert!(a < 2 || shown[0] == MASK, "{shown:?}");
        }
    }
}

#[test]
fn lines_are_held_only_while_they_may_end_in_a_spelling() {
    let masker = Masker::new([SECRET]);
    let mut stream = AcrossLines::default();
    let mut out = Vec::new();
    // Three bytes of its start: shown at once.
    stream.push(&masker, 1, "x tok".into(), &mut out);
    assert_eq!(out, [(1, "x tok".to_owned())]);
    // Four: held until the next line says it was none, then shown as it was.
    stream.push(&masker, 2, "y tok-".into(), &mut out);
    assert_eq!(out.len(), 1);
    stream.push(&masker, 3, "thing".into(), &mut out);
    assert_eq!(
        out[1..],
        [(2, "y tok-".to_owned()), (3, "thing".to_owned())]
    );
    stream.finish(&mut out);
    assert_eq!(out.len(), 3);
    // Held at the end of the text: handed on by `finish`, as it is.
    stream.push(&masker, 4, "z TOK-K".into(), &mut out);
    assert_eq!(out.len(), 3);
    stream.finish(&mut out);
    assert_eq!(out[3], (4, "z TOK-K".to_owned()));
}

#[test]
fn nothing_is_held_without_secrets_and_lines_alone_are_masked_as_the_masker_does() {
    let none = Masker::default();
    let mut stream = AcrossLines::default();
    let mut out = Vec::new();
    stream.push(&none, (), "tok-".into(), &mut out);
    assert_eq!(out, [((), "tok-".to_owned())]);

    let masker = Masker::new(["abc", "bcd", "hunter2", "é"]);
    let lines: Vec<String> = [
        "xabcdx",
        "pw: hunter2 and HUNTER2",
        "2retnuh",
        "café éé",
        "abab",
        "",
    ]
    .map(String::from)
    .to_vec();
    let shown = through(&masker, &lines);
    let alone: Vec<String> = lines.iter().map(|l| masker.mask(l).into_owned()).collect();
    assert_eq!(shown, alone);
}

#[test]
fn empty_lines_beyond_the_bound_let_the_oldest_go() {
    let masker = Masker::new([SECRET]);
    let mut stream = AcrossLines::default();
    let mut out = Vec::new();
    stream.push(&masker, 0, "see tok-K".into(), &mut out);
    for n in 1..=MAX_HELD_LINES {
        stream.push(&masker, n, String::new(), &mut out);
    }
    assert_eq!(out.len(), 1, "the oldest went once the bound was passed");
    assert_eq!(out[0], (0, "see tok-K".to_owned()));
    stream.push(&masker, MAX_HELD_LINES + 1, "x9Q2mPzW".into(), &mut out);
    // The rest of it is still masked where it arrives.
    assert_eq!(out.last().unwrap().1, MASK);
}
