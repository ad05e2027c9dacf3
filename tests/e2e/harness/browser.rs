//! Headless Chromium (Debian's package) reading a page as a person would:
//! it loads and renders the page, and the test reads the text it shows.

use std::process::Command;

/// The page at `url` after Chromium loaded it: its DOM, and the text a
/// person reads (tags dropped, whitespace collapsed).
pub fn read_page(url: &str) -> Result<(String, String), String> {
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .map_err(|e| format!("chromium (apt-get install chromium; make test does): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    Ok((text_of(&dom), dom))
}

/// The visible text of an HTML document: the body without its tags.
fn text_of(dom: &str) -> String {
    let body = dom.split_once("<body").map_or(dom, |(_, b)| b);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&quot;", "\"");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
