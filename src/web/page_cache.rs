//! The storefront's `/` and product pages rendered once per products
//! version, like the JSON catalogue (`views::PublicViews`): every buyer's
//! first request renders the same page from the same products, so it is
//! kept, per language and page, until a committed batch changes a product
//! (`Store::products_version`, bumped after the batch is applied). A page
//! with a form is kept with a per-process placeholder where each buyer's
//! CSRF token goes (`WebState::csrf_slot`).

use super::Lang;
use std::collections::HashMap;
use std::sync::Mutex;

/// Pages kept at most: a category is whatever a query says, so the map is
/// emptied rather than let grow.
const MAX_PAGES: usize = 256;

/// Which page: the storefront of a category (or all), or a product's page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Page {
    Home(Option<String>),
    Product(String),
}

type Key = (Lang, Page);

#[derive(Default)]
pub struct PageCache {
    pages: Mutex<(u64, HashMap<Key, String>)>,
}

impl PageCache {
    /// The page rendered at `version` in this language.
    pub fn get(&self, version: u64, lang: Lang, page: &Page) -> Option<String> {
        let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        if pages.0 != version {
            return None;
        }
        pages.1.get(&(lang, page.clone())).cloned()
    }

    /// Keeps a page rendered from what the store held at `version` (read
    /// before the products were).
    pub fn put(&self, version: u64, lang: Lang, page: Page, html: &str) {
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        if pages.0 != version || pages.1.len() >= MAX_PAGES {
            *pages = (version, HashMap::new());
        }
        pages.1.insert((lang, page), html.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_kept_only_for_its_version_language_and_category() {
        let cache = PageCache::default();
        let all = Page::Home(None);
        cache.put(3, Lang::Zh, all.clone(), "zh all");
        assert_eq!(cache.get(3, Lang::Zh, &all).as_deref(), Some("zh all"));
        assert_eq!(cache.get(3, Lang::En, &all), None);
        assert_eq!(
            cache.get(3, Lang::Zh, &Page::Home(Some("Games".into()))),
            None
        );
        assert_eq!(cache.get(3, Lang::Zh, &Page::Product("Games".into())), None);
        assert_eq!(cache.get(4, Lang::Zh, &all), None, "a product changed");
        cache.put(4, Lang::En, all.clone(), "en all");
        assert_eq!(
            cache.get(4, Lang::Zh, &all),
            None,
            "the old version is gone"
        );
        for i in 0..MAX_PAGES + 1 {
            cache.put(4, Lang::En, Page::Home(Some(format!("c{i}"))), "page");
        }
        assert!(cache.pages.lock().unwrap().1.len() <= MAX_PAGES);
    }
}
