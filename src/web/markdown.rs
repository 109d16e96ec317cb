//! A product's Markdown description as safe HTML: raw HTML in the Markdown
//! is shown as text, and `ammonia` removes whatever else could run or load
//! script (`javascript:` links, event attributes, unknown tags).

use pulldown_cmark::{Event, Options, Parser};

pub fn render(markdown: &str) -> String {
    let events = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    )
    .map(|e| match e {
        Event::Html(t) | Event::InlineHtml(t) => Event::Text(t),
        other => other,
    });
    let mut html = String::with_capacity(markdown.len() * 2);
    pulldown_cmark::html::push_html(&mut html, events);
    ammonia::clean(&html)
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_renders_but_nothing_in_it_can_run() {
        assert!(render("**bold** [a](https://example.com)").contains("<strong>bold</strong>"));
        for evil in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<iframe src=\"https://evil.example\"></iframe>",
        ] {
            let out = render(evil);
            let lower = out.to_lowercase();
            assert!(!lower.contains("<script"), "{evil} -> {out}");
            assert!(!lower.contains("<a href=\"javascript"), "{evil} -> {out}");
            assert!(!lower.contains("<img"), "{evil} -> {out}");
            assert!(!lower.contains("<iframe"), "{evil} -> {out}");
        }
    }
}
