//! The little Markdown the pages need: tables whose cells cannot break the table, and code.

/// A table; `|` and line breaks in cells are escaped so every row keeps its columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = String>| -> String {
        let cells: Vec<String> = cells.collect();
        format!("| {} |\n", cells.join(" | "))
    };
    out.push_str(&line(&mut headers.iter().map(|h| cell(h))));
    out.push_str(&line(&mut headers.iter().map(|_| "---".to_string())));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(|c| cell(c))));
    }
    out
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Inline code; text that holds a backtick is fenced with two.
pub fn code(text: &str) -> String {
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// A fenced block, the text as it is.
pub fn block(lang: &str, text: &str) -> String {
    let body = text.strip_suffix('\n').unwrap_or(text);
    format!("```{lang}\n{body}\n```\n")
}

/// Names as inline code, joined with commas; `none` when there are none.
pub fn codes<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|s| code(s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}
