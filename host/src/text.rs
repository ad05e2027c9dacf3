//! Text that came from outside (guest stderr and logs, plugin errors, etcd
//! and Kubernetes messages) on its way into logs, Events and status pages:
//! cut at a character boundary and stripped of control characters, so it
//! can neither panic the host nor forge a log line.

/// Appended where text was cut.
const ELLIPSIS: char = '…';

/// `text` cut to at most `max_bytes` bytes (plus an ellipsis when cut),
/// never inside a character.
pub fn truncated(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let cut = floor_char_boundary(text, max_bytes.saturating_sub(ELLIPSIS.len_utf8()));
    let mut out = String::with_capacity(cut + ELLIPSIS.len_utf8());
    out.push_str(&text[..cut]);
    out.push(ELLIPSIS);
    out
}

/// The largest character boundary of `text` at or below `index`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut cut = index.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// One line of text: control characters (newlines included) escaped as
/// `\n`, `\u{1b}`…, then cut to `max_bytes`. A plugin that logs
/// "done\nERROR host: …" shows up as one line that says so.
pub fn one_line(text: &str, max_bytes: usize) -> String {
    let escaped = if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text.to_string()
    };
    truncated(&escaped, max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_byte_text_is_cut_on_a_character_boundary() {
        // 'é' is two bytes, '日' three, '🦀' four: every cut position lands
        // inside one of them somewhere.
        let text = "é日🦀".repeat(200);
        for max in 0..text.len() + 2 {
            let cut = truncated(&text, max);
            assert!(
                cut.len() <= max.max(ELLIPSIS.len_utf8()),
                "max {max}: {} bytes",
                cut.len()
            );
            if max < text.len() {
                assert!(cut.ends_with(ELLIPSIS));
            } else {
                assert_eq!(cut, text);
            }
        }
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let forged = "done\n2026-12-02T00:00:00Z ERROR etcd_inspector: forged\r\u{1b}[31m";
        let line = one_line(forged, 1000);
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\u{1b}'));
        assert_eq!(
            line,
            "done\\n2026-12-02T00:00:00Z ERROR etcd_inspector: forged\\r\\u{1b}[31m"
        );
        assert_eq!(one_line("plain ünïcode", 1000), "plain ünïcode");
    }
}
