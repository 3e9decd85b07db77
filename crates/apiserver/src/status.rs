//! Failed requests, answered as Kubernetes `Status` objects.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shardvault_store::StoreError;

/// A failed request: HTTP code, `Status.reason`, message and optional `details`.
#[derive(Debug)]
pub struct Failure {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl Failure {
    /// A failure without details.
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 404 NotFound for a path the server does not serve.
    pub fn no_such_path(path: &str) -> Failure {
        Failure::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource {path}"),
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &axum::http::Method) -> Failure {
        Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on this path"),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The `Status` object of this failure.
    pub fn to_status(&self) -> Value {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            body["details"] = d.clone();
        }
        body
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.to_status())).into_response()
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        let code =
            StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let details = match &e {
            StoreError::Invalid(v) => Some(json!({
                "name": v.name, "kind": v.kind,
                "causes": v.errors.iter().map(|f| json!({
                    "reason": "FieldValueInvalid", "field": f.path, "message": f.message,
                })).collect::<Vec<_>>(),
            })),
            StoreError::NotFound { kind, name, .. }
            | StoreError::AlreadyExists { kind, name, .. }
            | StoreError::Conflict { kind, name, .. } => Some(json!({
                "name": name, "group": kind.group(), "kind": kind.plural(),
            })),
            _ => None,
        };
        Failure {
            code,
            reason: e.reason(),
            message: e.to_string(),
            details,
        }
    }
}
