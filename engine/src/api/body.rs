//! [`Object`]: the JSON request bodies of `/api`, which are objects and nothing else.
//!
//! Invariant: a body is deserialized only from a JSON object. serde's derived `Deserialize`
//! also takes a struct from an array of its fields in order (`["ci"]` for `{"name": "ci"}`),
//! which the documented schemas (`type: object`) do not allow; such a body is a 422 here.
//! Every rejection is an [`ApiError`] with the status axum's `Json` would give (400 bad
//! JSON, 413 too large, 415 not `application/json`, 422 the wrong shape).

use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http_error::ApiError;

/// A JSON object body deserialized into `T`.
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) T);

impl<T: DeserializeOwned> Object<T> {
    fn from_value(value: Value) -> Result<Object<T>, ApiError> {
        // regression: `["name"]` was taken for `{"name": ...}`; schemathesis found it.
        if !value.is_object() {
            return Err(ApiError::Client(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the body must be a JSON object, not {}",
                    match value {
                        Value::Null => "null",
                        Value::Bool(_) => "a boolean",
                        Value::Number(_) => "a number",
                        Value::String(_) => "a string",
                        Value::Array(_) => "an array",
                        Value::Object(_) => "an object",
                    }
                ),
            ));
        }
        serde_json::from_value(value).map(Object).map_err(|e| {
            ApiError::Client(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
        })
    }
}

impl<S, T> FromRequest<S> for Object<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = <Json<Value> as FromRequest<S>>::from_request(request, state).await?;
        Object::from_value(value)
    }
}

/// No body (no `Content-Type`) is `None`; any other body is as for a required one.
impl<S, T> OptionalFromRequest<S> for Object<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let body: Option<Json<Value>> =
            <Json<Value> as OptionalFromRequest<S>>::from_request(request, state).await?;
        body.map(|Json(value)| Object::from_value(value))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Named {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn only_objects_are_bodies() {
        assert!(Object::<Named>::from_value(serde_json::json!({"name": "ci"})).is_ok());
        for wrong in [
            serde_json::json!(["ci"]),
            serde_json::json!(null),
            serde_json::json!("ci"),
            serde_json::json!({"name": 1}),
            serde_json::json!({"name": "ci", "other": 1}),
        ] {
            match Object::<Named>::from_value(wrong.clone()) {
                Err(ApiError::Client(status, _)) => {
                    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong}")
                }
                other => panic!("{wrong} gave {other:?}"),
            }
        }
    }
}
