//! The tap between a real Gitea and an engine: Gitea's deliveries forwarded unchanged
//! (headers and bytes) to the engine's `/webhooks/gitea`, each kept with the engine's
//! answer, so a test knows when a delivery was handled and what Plue said of it, and can
//! send the very same delivery again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::super::{free_port, run_ids, wait_for};

/// One delivery Gitea made, as the tap forwarded it, and the engine's answer.
#[derive(Debug, Clone)]
pub(crate) struct Tapped {
    pub(crate) event: String,
    pub(crate) delivery: String,
    headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
    pub(crate) status: u16,
    pub(crate) answer: Value,
}

impl Tapped {
    /// The delivery's body as JSON.
    pub(crate) fn payload(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The runs the engine said this delivery started.
    pub(crate) fn runs(&self) -> Vec<i64> {
        run_ids(&self.answer)
    }
}

/// Forwards Gitea's deliveries to an engine unchanged, keeping each with its answer.
pub(crate) struct Tap {
    /// Where Gitea delivers: `http://127.0.0.1:PORT/webhooks/gitea`.
    pub(crate) url: String,
    target: String,
    seen: Arc<Mutex<Vec<Tapped>>>,
}

impl Tap {
    /// A tap forwarding to `{engine}/webhooks/gitea`.
    pub(crate) async fn start(engine: &str) -> Tap {
        let target = format!("{engine}/webhooks/gitea");
        let seen: Arc<Mutex<Vec<Tapped>>> = Arc::default();
        let state = (target.clone(), seen.clone());
        let app = axum::Router::new().fallback(
            |axum::extract::State((target, seen)): axum::extract::State<(
                String,
                Arc<Mutex<Vec<Tapped>>>,
            )>,
             headers: axum::http::HeaderMap,
             body: axum::body::Bytes| async move {
                let headers: Vec<(String, Vec<u8>)> = headers
                    .iter()
                    .filter(|(name, _)| !matches!(name.as_str(), "host" | "content-length"))
                    .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                    .collect();
                let (status, answer) = forward(&target, &headers, &body).await;
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                seen.lock().unwrap().push(Tapped {
                    event: header("x-gitea-event"),
                    delivery: header("x-gitea-delivery"),
                    headers: headers.clone(),
                    body: body.to_vec(),
                    status,
                    answer: answer.clone(),
                });
                let code = axum::http::StatusCode::from_u16(status).unwrap();
                (code, answer.to_string())
            },
        );
        let app = app.with_state(state);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
            .await
            .expect("bind the tap");
        let url = format!("http://{}/webhooks/gitea", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Tap { url, target, seen }
    }

    /// Every delivery so far.
    pub(crate) fn seen(&self) -> Vec<Tapped> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (60 s at most) for a delivery of `event` for which `wanted` holds.
    pub(crate) async fn delivered(
        &self,
        event: &str,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Tapped {
        wait_for(Duration::from_secs(60), what, || async {
            self.seen()
                .into_iter()
                .find(|t| t.event == event && wanted(&t.payload()))
        })
        .await
    }

    /// Sends `tapped` to the engine again, exactly as Gitea sent it: status and answer.
    pub(crate) async fn resend(&self, tapped: &Tapped) -> (u16, Value) {
        forward(&self.target, &tapped.headers, &tapped.body).await
    }
}

async fn forward(target: &str, headers: &[(String, Vec<u8>)], body: &[u8]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(target).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_slice());
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(e) => (502, Value::String(format!("the engine: {e}"))),
    }
}
