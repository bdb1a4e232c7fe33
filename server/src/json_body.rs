//! [`JsonBody`]: a JSON request body, taken as `axum::Json` takes it, but parsed straight
//! with serde_json.
//!
//! `axum::Json` tracks the path of every value it parses (`serde_path_to_error`) so that
//! its error can say where a body went wrong. On a runner's batch of log lines that
//! bookkeeping cost as much as the parse itself, for an error that almost never happens.
//! Here a body that parses pays none of it; one that does not is parsed again by
//! `axum::Json`, whose rejection (with the path) is the answer.
//!
//! Invariant: accepts and refuses exactly what `axum::Json<T>` does, with the same
//! rejection: 415 without a JSON content type, the body extractor's own (413 past the body
//! limit), 400 for malformed JSON, 422 for JSON of the wrong shape.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, MissingJsonContentType};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = JsonRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, JsonRejection> {
        if !json_content_type(req.headers()) {
            return Err(MissingJsonContentType::default().into());
        }
        let bytes = Bytes::from_request(req, state).await?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(JsonBody(value)),
            Err(_) => Json::<T>::from_bytes(&bytes).map(|Json(value)| JsonBody(value)),
        }
    }
}

/// `application/json`, or any `application/*+json`, with any parameters: axum's rule.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(mime) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<mime::Mime>().ok())
    else {
        return false;
    };
    mime.type_() == "application"
        && (mime.subtype() == "json" || mime.suffix().is_some_and(|name| name == "json"))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        lines: Vec<u64>,
    }

    fn request(content_type: Option<&str>, body: &str) -> Request {
        let mut builder = Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap()
    }

    /// What each extractor makes of one request: the value, or the status and message.
    async fn both(
        content_type: Option<&str>,
        body: &str,
    ) -> [Result<Batch, (StatusCode, String)>; 2] {
        let ours = JsonBody::<Batch>::from_request(request(content_type, body), &())
            .await
            .map(|JsonBody(batch)| batch)
            .map_err(|r| (r.status(), r.body_text()));
        let axums = Json::<Batch>::from_request(request(content_type, body), &())
            .await
            .map(|Json(batch)| batch)
            .map_err(|r| (r.status(), r.body_text()));
        [ours, axums]
    }

    #[tokio::test]
    async fn accepts_and_refuses_what_axum_json_does_with_the_same_answer() {
        let json = Some("application/json");
        let cases = [
            (json, r#"{"lines": [1, 2, 3]}"#),
            (Some("application/json; charset=utf-8"), r#"{"lines": []}"#),
            (Some("application/cloudevents+json"), r#"{"lines": [4]}"#),
            (Some("text/json"), r#"{"lines": []}"#),
            (Some("not a mime type"), r#"{"lines": []}"#),
            (None, r#"{"lines": []}"#),
            (json, r#"{"lines": [1, 2"#),
            (json, r#"{"lines": []} trailing"#),
            (json, r#"{"lines": [1, "two"]}"#),
            (json, r#"{"lines": [], "more": 1}"#),
            (json, r#"{"lines": [-1]}"#),
            (json, ""),
            (json, "null"),
        ];
        for (content_type, body) in cases {
            let [ours, axums] = both(content_type, body).await;
            assert_eq!(ours, axums, "{content_type:?} {body:?}");
        }
        let [ours, _] = both(json, r#"{"lines": [1, "two"]}"#).await;
        let (status, message) = ours.unwrap_err();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains("lines[1]"), "the path is named: {message}");
    }
}
