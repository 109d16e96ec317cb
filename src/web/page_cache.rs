//! The storefront's `/` rendered once per products version, like the JSON
//! catalogue (`views::PublicViews`): every buyer's first request renders
//! the same page from the same products, so it is kept, per language and
//! category, until a committed batch changes a product
//! (`Store::products_version`, bumped after the batch is applied).

use super::Lang;
use std::collections::HashMap;
use std::sync::Mutex;

/// Pages kept at most: a category is whatever a query says, so the map is
/// emptied rather than let grow.
const MAX_PAGES: usize = 64;

type Key = (Lang, Option<String>);

#[derive(Default)]
pub struct HomeCache {
    pages: Mutex<(u64, HashMap<Key, String>)>,
}

impl HomeCache {
    /// The page rendered at `version` for this language and category.
    pub fn get(&self, version: u64, lang: Lang, category: &Option<String>) -> Option<String> {
        let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        if pages.0 != version {
            return None;
        }
        pages.1.get(&(lang, category.clone())).cloned()
    }

    /// Keeps a page rendered from what the store held at `version` (read
    /// before the products were).
    pub fn put(&self, version: u64, lang: Lang, category: Option<String>, page: &str) {
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        if pages.0 != version || pages.1.len() >= MAX_PAGES {
            *pages = (version, HashMap::new());
        }
        pages.1.insert((lang, category), page.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_kept_only_for_its_version_language_and_category() {
        let cache = HomeCache::default();
        cache.put(3, Lang::Zh, None, "zh all");
        assert_eq!(cache.get(3, Lang::Zh, &None).as_deref(), Some("zh all"));
        assert_eq!(cache.get(3, Lang::En, &None), None);
        assert_eq!(cache.get(3, Lang::Zh, &Some("Games".into())), None);
        assert_eq!(cache.get(4, Lang::Zh, &None), None, "a product changed");
        cache.put(4, Lang::En, None, "en all");
        assert_eq!(
            cache.get(4, Lang::Zh, &None),
            None,
            "the old version is gone"
        );
        for i in 0..MAX_PAGES + 1 {
            cache.put(4, Lang::En, Some(format!("c{i}")), "page");
        }
        assert!(cache.pages.lock().unwrap().1.len() <= MAX_PAGES);
    }
}
