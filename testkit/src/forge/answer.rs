//! What a handler of the fake forge's REST API answers ([`Answer`]): below the router
//! (`api`) and the handlers it routes to (`checks`, `app`'s gate), which all make one, so
//! none of them imports another for it.

use serde_json::Value;

/// What a handler answers: a status, a JSON body and extra headers.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) headers: Vec<(String, String)>,
}

impl Answer {
    pub(crate) fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body,
            headers: Vec::new(),
        }
    }
}
