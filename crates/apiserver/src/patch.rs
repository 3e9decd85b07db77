//! PATCH: JSON patch, JSON merge patch, strategic merge patch (core kinds, as a merge
//! patch: their lists carry no merge keys shardvault uses), and apply (server-side apply
//! and the shardvault CLI's whole-manifest form) as the store's three-way merge.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shardvault_store::{ApplyOutcome, StoreError};

use crate::APPLY_OUTCOME_HEADER;
use crate::params::WriteParams;
use crate::path::Target;
use crate::resources::{Api, blocking, check_object, json_response};
use crate::status::Failure;

/// How often a patch is tried again when the object changed between read and write.
const CONFLICT_RETRIES: usize = 5;

/// The patch types Kubernetes defines, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply), or `application/json` with a
    /// whole manifest (the shardvault CLI's apply).
    Apply,
}

impl PatchType {
    fn of(headers: &HeaderMap) -> Result<PatchType, Failure> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/json" => Ok(PatchType::Apply),
            other => Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the patch type {other:?} is not supported: use application/merge-patch+json, application/json-patch+json or application/apply-patch+yaml"
                ),
            )),
        }
    }
}

/// Answers a PATCH of an object or of its status.
pub async fn patch(
    api: &Api,
    t: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Failure> {
    let params = WriteParams::parse(query)?;
    let ty = PatchType::of(headers)?;
    if ty == PatchType::Strategic && !t.kind.group().is_empty() {
        return Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "strategic merge patch is not supported for {} (a custom resource): use --type merge or --type json",
                t.kind
            ),
        ));
    }
    if ty == PatchType::Apply {
        return apply(api, t, params, body).await;
    }
    let ops = match ty {
        PatchType::Json => Some(
            serde_json::from_slice::<json_patch::Patch>(body)
                .map_err(|e| Failure::bad_request(format!("the JSON patch is not valid: {e}")))?,
        ),
        _ => None,
    };
    let merge = match ty {
        PatchType::Json => Value::Null,
        _ => serde_json::from_slice::<Value>(body)
            .map_err(|e| Failure::bad_request(format!("the merge patch is not JSON: {e}")))?,
    };
    let store = api.store_for(params);
    let (kind, ns, name) = (
        t.kind,
        t.namespace.clone().unwrap_or_default(),
        t.name.clone().unwrap_or_default(),
    );
    let target = t.clone();
    let api2 = api.clone();
    let out = blocking(&store, move |s| {
        let mut tries = 0;
        loop {
            let live = s.get(kind, &ns, &name)?;
            let mut doc = live.clone();
            match &ops {
                Some(ops) => json_patch_k8s(&mut doc, ops).map_err(|e| {
                    invalid(&live, format!("the JSON patch cannot be applied: {e}"))
                })?,
                None => json_patch::merge(&mut doc, &merge),
            }
            let doc = check_object(doc, &target).map_err(|f| invalid(&live, f.message))?;
            // A patch that names no resourceVersion applies to the version just read.
            let pinned = doc.pointer("/metadata/resourceVersion")
                != live.pointer("/metadata/resourceVersion");
            let result = if target.status {
                s.update_status(&doc)
            } else {
                api2.admit(s, &doc).and_then(|()| s.update(&doc))
            };
            match result {
                Err(StoreError::Conflict { .. }) if !pinned && tries < CONFLICT_RETRIES => {
                    tries += 1;
                }
                other => return other,
            }
        }
    })
    .await?;
    Ok(json_response(StatusCode::OK, out))
}

/// Applies a JSON patch as Kubernetes does: a `test` that a missing field is `null`
/// passes (kube-runtime's finalizer helper sends one before adding the first finalizer).
fn json_patch_k8s(doc: &mut Value, ops: &json_patch::Patch) -> Result<(), json_patch::PatchError> {
    for op in ops.iter() {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op))?;
    }
    Ok(())
}

/// A patch that cannot make a valid object: 422 naming the object.
fn invalid(live: &Value, message: String) -> StoreError {
    StoreError::Invalid(shardvault_api::ValidationError {
        kind: live["kind"].as_str().unwrap_or("").to_string(),
        name: live
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        errors: vec![shardvault_api::FieldError {
            path: String::new(),
            message,
        }],
    })
}

/// Apply: creates the object or three-way merges the manifest into it; the answer says
/// which in [`APPLY_OUTCOME_HEADER`].
async fn apply(
    api: &Api,
    t: &Target,
    params: WriteParams,
    body: &Bytes,
) -> Result<Response, Failure> {
    let doc: Value = yaml_serde::from_slice(body).map_err(|e| {
        Failure::bad_request(format!("the applied manifest is not YAML or JSON: {e}"))
    })?;
    if t.status {
        return Err(Failure::bad_request(
            "apply of the status subresource is not supported: use a merge patch",
        ));
    }
    let doc = check_object(doc, t)?;
    let store = api.store_for(params);
    let api2 = api.clone();
    let (obj, outcome) = blocking(&store, move |s| {
        api2.admit(s, &doc)?;
        s.apply(&doc)
    })
    .await?;
    let code = if outcome == ApplyOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        code,
        [(APPLY_OUTCOME_HEADER, outcome.to_string())],
        axum::Json(obj),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        h
    }

    #[test]
    fn content_types_pick_the_patch_type() {
        assert_eq!(
            PatchType::of(&headers("application/merge-patch+json")).unwrap(),
            PatchType::Merge
        );
        assert_eq!(
            PatchType::of(&headers("application/json-patch+json; charset=utf-8")).unwrap(),
            PatchType::Json
        );
        assert_eq!(
            PatchType::of(&headers("application/apply-patch+yaml")).unwrap(),
            PatchType::Apply
        );
        let e = PatchType::of(&headers("text/plain")).unwrap_err();
        assert_eq!(e.code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
