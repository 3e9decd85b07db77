//! Errors the daemon answers, from its Kubernetes `Status` objects, shown with the field
//! paths of a refused manifest.

use std::fmt;

use kube::core::Status;

/// An error answered by the daemon, from its Kubernetes `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.message`.
    pub message: String,
    /// Field paths and messages of a validation failure.
    pub causes: Vec<(String, String)>,
}

impl ApiError {
    pub(super) fn from_status(status: &Status) -> ApiError {
        ApiError {
            code: status.code,
            message: status.message.clone(),
            causes: status
                .details
                .iter()
                .flat_map(|d| &d.causes)
                .map(|c| (c.field.clone(), c.message.clone()))
                .collect(),
        }
    }

    /// The error of an answer that is not a success, from its body.
    pub(super) fn from_body(code: u16, body: &[u8]) -> ApiError {
        match serde_json::from_slice::<Status>(body) {
            Ok(status) if !status.message.is_empty() => ApiError {
                code,
                ..ApiError::from_status(&status)
            },
            _ => ApiError {
                code,
                message: String::from_utf8_lossy(body).into_owned(),
                causes: Vec::new(),
            },
        }
    }

    /// The error of a manifest refused before it was sent.
    pub fn from_validation(v: &shardvault_api::ValidationError) -> ApiError {
        ApiError {
            code: 422,
            message: v.to_string(),
            causes: v
                .errors
                .iter()
                .map(|e| (e.path.clone(), e.message.clone()))
                .collect(),
        }
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.causes.is_empty() {
            return f.write_str(&self.message);
        }
        let head = self
            .message
            .split_once(" is invalid")
            .map_or(self.message.as_str(), |(h, _)| h);
        write!(f, "{head} is invalid:")?;
        for (field, msg) in &self.causes {
            write!(f, "\n  * {field}: {msg}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// A kube error with the server's `Status` made an [`ApiError`].
pub(super) fn api_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(status) => ApiError::from_status(&status).into(),
        other => other.into(),
    }
}

/// True when `e` is the daemon saying the object does not exist.
pub(super) fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(ApiError::is_not_found)
}
