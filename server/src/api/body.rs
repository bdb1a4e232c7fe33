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
        serde_json::from_value(whole_numbers(value))
            .map(Object)
            .map_err(|e| {
                ApiError::Client(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("Failed to deserialize the JSON body into the target type: {e}"),
                )
            })
    }
}

/// `value` with each whole number written as a float (`795.0`) made an integer. JSON
/// Schema's `integer` is any number without a fraction, so the document's integers allow
/// `795.0`; serde refuses it for an integer field, which would refuse a schema-valid body
/// (schemathesis sends such numbers). A float field still takes the integer.
fn whole_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            // Both bounds are exact powers of two, so the casts below cannot saturate.
            Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
                Value::from(f as u64)
            }
            Some(f) if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&f) => {
                Value::from(f as i64)
            }
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, whole_numbers(v)))
                .collect(),
        ),
        other => other,
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

    #[derive(Debug, serde::Deserialize)]
    struct Sized {
        days: u32,
        offset: i64,
        ratio: f64,
    }

    // regression: `{"days": 30.0}` was a 422 though the document's `integer` allows it;
    // schemathesis found it. A fraction is still refused.
    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        let body = serde_json::json!({"days": 30.0, "offset": -2.0, "ratio": 3});
        let Object(sized) = Object::<Sized>::from_value(body).unwrap();
        assert_eq!((sized.days, sized.offset, sized.ratio), (30, -2, 3.0));
        for wrong in [
            serde_json::json!({"days": 30.5, "offset": 0, "ratio": 0}),
            serde_json::json!({"days": 1e20, "offset": 0, "ratio": 0}),
            serde_json::json!({"days": -1.0, "offset": 0, "ratio": 0}),
        ] {
            assert!(
                Object::<Sized>::from_value(wrong.clone()).is_err(),
                "{wrong}"
            );
        }
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
