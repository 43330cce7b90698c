//! `-o yaml` as kubectl writes it: the object's JSON with keys sorted,
//! block style, two-space indents, sequences at their key's indent, and
//! strings quoted only where YAML would read them as something else.
use serde_json::Value;

pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => sequence(&mut out, items, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, level: usize) {
    out.extend(std::iter::repeat_n(' ', level));
}

fn mapping(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (index, (key, value)) in map.iter().enumerate() {
        // The first key of a sequence item follows its "- ".
        if index > 0 || !out.ends_with("- ") {
            indent(out, level);
        }
        out.push_str(&string(key));
        out.push(':');
        value_after_key(out, value, level);
    }
}

fn value_after_key(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(out, map, level + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(out, items, level);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn sequence(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => mapping(out, map, level + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                sequence(out, inner, level + 2);
            }
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string(text),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string plain when YAML reads it back as the same string, else
/// double-quoted.
fn string(text: &str) -> String {
    if plain_is_safe(text) {
        return text.to_owned();
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

fn plain_is_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    // An indicator first is read as syntax; "-x" is a plain string.
    let indicator = "?:,[]{}#&*!|>'\"%@`".contains(first);
    if indicator || text == "-" || text.starts_with("- ") {
        return false;
    }
    if text.starts_with(' ')
        || text.ends_with(' ')
        || text.ends_with(':')
        || text.contains(": ")
        || text.contains(" #")
        || text.chars().any(char::is_control)
    {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ];
    if reserved.contains(&lower.as_str()) || looks_numeric(text) || looks_like_time(text) {
        return false;
    }
    true
}

/// What a YAML 1.1 reader would take for a number.
fn looks_numeric(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    if body.is_empty() {
        return false;
    }
    let lower = body.to_ascii_lowercase();
    if [".inf", ".nan"].contains(&lower.as_str()) {
        return true;
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    let mut digits = 0;
    let mut dots = 0;
    for (index, character) in lower.char_indices() {
        match character {
            '0'..='9' | '_' => digits += usize::from(character != '_'),
            '.' => dots += 1,
            'e' if digits > 0 => {
                let exponent = lower[index + 1..].trim_start_matches(['-', '+']);
                return dots <= 1
                    && !exponent.is_empty()
                    && exponent.chars().all(|c| c.is_ascii_digit());
            }
            _ => return false,
        }
    }
    digits > 0 && dots <= 1
}

/// A date or timestamp (`2026-12-03`, `2026-12-03T04:05:47Z`).
fn looks_like_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'-'
        && bytes[8..10].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_own_yaml_is_written_back_byte_for_byte() {
        let recorded = include_str!("../../../tests/fixtures/kubectl/get-svc-yaml.txt");
        let value: Value = serde_saphyr::from_str(recorded).unwrap();
        assert_eq!(to_yaml(&value), recorded);
        let recorded = include_str!("../../../tests/fixtures/kubectl/get-pod-yaml.txt");
        let value: Value = serde_saphyr::from_str(recorded).unwrap();
        assert_eq!(to_yaml(&value), recorded);
    }

    #[test]
    fn strings_yaml_would_misread_are_quoted() {
        for (text, written) in [
            ("80", "\"80\""),
            ("true", "\"true\""),
            ("", "\"\""),
            ("1e3", "\"1e3\""),
            ("2026-12-03T04:05:47Z", "\"2026-12-03T04:05:47Z\""),
            ("a: b", "\"a: b\""),
            ("- x", "\"- x\""),
            ("nginx:1.27", "nginx:1.27"),
            ("app=web", "app=web"),
            ("198.19.0.1", "198.19.0.1"),
            ("k:{\"port\":80}", "k:{\"port\":80}"),
        ] {
            assert_eq!(string(text), written, "{text:?}");
        }
    }
}
