//! Where a secret is looked for: each spelling of it as a [`Needle`] (folded without ASCII
//! case but for base64's, with its letters and digits alone when long enough), and each
//! text as the [`Views`] a reader may get of it — as it is, decoded, as shown, without
//! inline marks, percent-decoded, and, for a forge's text, what its renderer shows and
//! links.

use crate::spellings::Spelling;
use crate::{markdown, render, MASK, MIN_SKELETON};

/// One spelling of a secret, as it is looked for.
#[derive(Clone)]
pub(crate) struct Needle {
    pub(crate) spelling: Spelling,
    /// The spelling; ASCII-lowercase when `folded`.
    pub(crate) text: String,
    /// Whether it is compared without ASCII case: every spelling but base64's (a reader
    /// who sees `GHP_…` or mixed-case hex has the secret all the same).
    pub(crate) folded: bool,
    /// Its letters and digits alone (lowercase when `folded`), if long enough.
    skeleton: Option<String>,
}

impl Needle {
    pub(crate) fn new(spelling: Spelling, text: String) -> Needle {
        let folded = !matches!(spelling, Spelling::Base64 | Spelling::Base64Url);
        let text = if folded {
            text.to_ascii_lowercase()
        } else {
            text
        };
        let skeleton = render::skeleton(&text);
        let skeleton = (skeleton.chars().count() >= MIN_SKELETON).then_some(skeleton);
        Needle {
            spelling,
            text,
            folded,
            skeleton,
        }
    }

    /// `text` with every occurrence of this spelling (without case when folded) masked.
    pub(crate) fn mask_in(&self, text: &str) -> String {
        if !self.folded {
            return text.replace(self.text.as_str(), MASK);
        }
        // ASCII lowercasing keeps every byte where it was.
        let lower = text.to_ascii_lowercase();
        let mut out = String::with_capacity(text.len());
        let mut from = 0;
        for (at, _) in lower.match_indices(self.text.as_str()) {
            out.push_str(&text[from..at]);
            out.push_str(MASK);
            from = at + self.text.len();
        }
        out.push_str(&text[from..]);
        out
    }
}

/// The views of a text a secret is looked for in.
pub(crate) struct Views {
    /// As it is, decoded, without inline marks, percent-decoded, as shown.
    exact: Vec<String>,
    /// The same, ASCII-lowercased.
    folded: Vec<String>,
    /// The letters and digits alone of what a reader sees (and percent-decoded).
    skeleton: Vec<String>,
    /// The same, ASCII-lowercased.
    skeleton_folded: Vec<String>,
}

impl Views {
    /// The raw views of `text` and what a forge's reader gets of it (its `reading`).
    pub(crate) fn rendered(text: &str, reading: &markdown::Reading) -> Views {
        let mut views = Views::of(text);
        let urls = reading.urls.join("\n");
        for view in [
            render::strip_invisible(&reading.visible),
            render::percent_decoded(&urls),
            urls,
        ] {
            views.skeleton.push(render::skeleton(&view));
            views
                .skeleton_folded
                .push(render::skeleton(&view).to_ascii_lowercase());
            views.folded.push(view.to_ascii_lowercase());
            views.exact.push(view);
        }
        views
    }

    /// The raw views of `text`: as it is, decoded, as a browser shows raw HTML.
    pub(crate) fn of(text: &str) -> Views {
        let shown = render::visible(text);
        let skeleton = vec![
            render::skeleton(&shown),
            render::skeleton(&render::percent_decoded(&shown)),
        ];
        let exact = vec![
            text.to_owned(),
            render::decoded(text),
            render::without_inline_marks(&shown),
            render::percent_decoded(&shown),
            shown,
        ];
        Views {
            folded: exact.iter().map(|v| v.to_ascii_lowercase()).collect(),
            skeleton_folded: skeleton.iter().map(|v| v.to_ascii_lowercase()).collect(),
            exact,
            skeleton,
        }
    }

    /// Whether a view holds `needle` as it is spelt.
    pub(crate) fn hold(&self, needle: &Needle) -> bool {
        let views = match needle.folded {
            true => &self.folded,
            false => &self.exact,
        };
        views.iter().any(|v| v.contains(needle.text.as_str()))
    }

    /// Whether the letters and digits alone of a view hold `needle`'s.
    pub(crate) fn hold_cut(&self, needle: &Needle) -> bool {
        let skeletons = match needle.folded {
            true => &self.skeleton_folded,
            false => &self.skeleton,
        };
        needle
            .skeleton
            .as_ref()
            .is_some_and(|s| skeletons.iter().any(|v| v.contains(s.as_str())))
    }
}
