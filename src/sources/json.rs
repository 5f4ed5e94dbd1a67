//! JSON text as senders write it and `serde_json` reads it: where the two disagree, found by scanning the bytes.

/// The body with every `\uD800`–`\uDFFF` escape that is not half of a valid surrogate pair rewritten to
/// `\uFFFD` (the replacement character), so that a strict parser reads it. Node's `JSON.stringify`, which
/// Segment uses to sign and send, writes a lone surrogate that way: valid JSON text that `serde_json` refuses.
/// The rewrite keeps every byte's position (an escape stays six bytes), so a part of the result is found at
/// the same offsets in the body as received, which is what a signature covers. A body with no such escape is
/// returned as it is, without a copy.
pub fn replace_lone_surrogates(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let hex4 = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(body.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let escape_at = |at: usize| body.get(at) == Some(&b'\\') && body.get(at + 1) == Some(&b'u');
    // The fast path: no `\uD8`–`\uDF` anywhere (or only inside a `\\`), nothing to copy.
    let maybe = body.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && (w[2] | 0x20) == b'd'
            && matches!(w[3] | 0x20, b'8'..=b'9' | b'a'..=b'f')
    });
    if !maybe {
        return body.into();
    }
    let mut out: Option<Vec<u8>> = None;
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        match (in_string, body[i]) {
            (false, b'"') => in_string = true,
            (false, _) => {}
            (true, b'"') => in_string = false,
            (true, b'\\') if escape_at(i) => {
                let unit = hex4(i + 2);
                let high = unit.is_some_and(|u| (0xD800..=0xDBFF).contains(&u));
                let low = unit.is_some_and(|u| (0xDC00..=0xDFFF).contains(&u));
                let paired = high
                    && escape_at(i + 6)
                    && hex4(i + 8).is_some_and(|u| (0xDC00..=0xDFFF).contains(&u));
                if paired {
                    i += 12;
                    continue;
                }
                if high || low {
                    out.get_or_insert_with(|| body.to_vec())[i + 2..i + 6].copy_from_slice(b"fffd");
                }
                i += 6;
                continue;
            }
            // Any other escape: skip the escaped character (a `\"` does not end the string).
            (true, b'\\') => {
                i += 2;
                continue;
            }
            (true, _) => {}
        }
        i += 1;
    }
    match out {
        Some(repaired) => repaired.into(),
        None => body.into(),
    }
}

/// Whether valid JSON text (a [`RawValue`]) also reads as a [`Value`]: skipping over a value, as
/// `RawValue` does, lets through two things a `Value` refuses, numbers out of `f64`'s range (`1e400`) and
/// unpaired UTF-16 surrogates in `\u` escapes (and it has no nesting limit). Those go the slow way, which refuses them with a reason.
pub(crate) fn reads_as_value(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    // serde_json's `Value` stops at 128 levels of nesting; anything near that goes the slow way.
    let mut depth = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > 100 {
                    return false;
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => {
                i += 1;
                // A high surrogate waiting for its low half.
                let mut pending_high = false;
                loop {
                    // Plain text up to the next quote or escape, found a word at a time (most of an
                    // event is string content). Valid JSON text always closes its strings.
                    let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[i..]) else {
                        return false;
                    };
                    if at > 0 && pending_high {
                        return false;
                    }
                    i += at;
                    if bytes[i] == b'"' {
                        break;
                    }
                    if bytes[i + 1] == b'u' {
                        let hex = std::str::from_utf8(&bytes[i + 2..i + 6]).unwrap_or("");
                        let unit = u16::from_str_radix(hex, 16).unwrap_or(0);
                        match unit {
                            0xD800..=0xDBFF if !pending_high => pending_high = true,
                            0xDC00..=0xDFFF if pending_high => pending_high = false,
                            0xD800..=0xDFFF => return false,
                            _ if pending_high => return false,
                            _ => {}
                        }
                        i += 6;
                        continue;
                    }
                    if pending_high {
                        return false;
                    }
                    i += 2;
                }
                if pending_high {
                    return false;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let number = std::str::from_utf8(&bytes[start..i]).unwrap_or("");
                if !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{reads_as_value, replace_lone_surrogates};
    use serde_json::Value;
    use std::borrow::Cow;

    fn repaired(json: &str) -> String {
        String::from_utf8(replace_lone_surrogates(json.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn lone_surrogate_escapes_become_the_replacement_character_and_pairs_stay() {
        for (body, want) in [
            (r#"{"a":"\ud83d"}"#, r#"{"a":"\ufffd"}"#),
            (r#"{"a":"x\uDC00y"}"#, r#"{"a":"x\ufffdy"}"#),
            (r#"{"a":"\ud83d\u0041"}"#, r#"{"a":"\ufffd\u0041"}"#),
            (
                r#"{"a":"\ud83d\ud83d\ude00"}"#,
                r#"{"a":"\ufffd\ud83d\ude00"}"#,
            ),
            (r#"["\udc00\ud800"]"#, r#"["\ufffd\ufffd"]"#),
        ] {
            let got = repaired(body);
            assert_eq!(got, want, "{body}");
            assert_eq!(got.len(), body.len(), "positions are kept");
            let value: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert!(value.to_string().contains('\u{FFFD}'), "{value}");
        }
    }

    #[test]
    fn bodies_without_a_lone_surrogate_are_not_copied() {
        for body in [
            r#"{"a":"\ud83d\ude00 ok"}"#,
            r#"{"a":"\\ud800 is text, not an escape"}"#,
            r#"{"a":"plain","b":"\"\ud8"}"#,
            "",
        ] {
            assert!(
                matches!(replace_lone_surrogates(body.as_bytes()), Cow::Borrowed(_)),
                "{body}"
            );
        }
    }

    #[test]
    fn what_a_value_refuses_goes_the_slow_way() {
        for bad in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00x"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e999}"#,
        ] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
            assert!(!reads_as_value(bad), "{bad}");
        }
        for good in [
            r#"{"a":"\ud83d\ude00 \"q\" \\","b":[1,-2.5e10,0],"c":{"d":null}}"#,
            r#"{"a":123456789012345678901234567890,"b":"é\u00e9"}"#,
        ] {
            assert!(serde_json::from_str::<Value>(good).is_ok(), "{good}");
            assert!(reads_as_value(good), "{good}");
        }
    }
}
