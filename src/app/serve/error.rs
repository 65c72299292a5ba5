//! The API's one error shape, `{"error": {"code": "...", "message": "..."}}` (plus `details`
//! where there is more to say), with the HTTP status that fits, and how the crate's errors map
//! onto it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::Error;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable name (`unauthorized`, `not_found`, `invalid_request`, …).
    pub code: &'static str,
    /// What went wrong and what to do about it, for people.
    pub message: String,
    /// More, when there is (the places a task lookup searched, a command's result, …).
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// 400: the request is malformed (a bad value, an unknown parameter, a body that does not
    /// read).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401: no token, or not a valid one.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token's role does not allow this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such thing (or one the token may not see: the answer is the same).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: a guardrail refused the change (nothing was changed).
    pub fn refused(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "refused", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let (status, code) = match &e {
            Error::Usage(_) | Error::InvalidTask(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Refused(_) => (StatusCode::CONFLICT, "refused"),
            Error::FleetDown(_) => (StatusCode::SERVICE_UNAVAILABLE, "fleet_down"),
            Error::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Error::Interrupted(_) => (StatusCode::CONFLICT, "interrupted"),
            Error::Redis(_) | Error::OutOfMemory(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable")
            }
            Error::Archive(_) => (StatusCode::INTERNAL_SERVER_ERROR, "archive_failed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(d), Some(m)) = (self.details, error.as_object_mut()) {
            m.insert("details".into(), d);
        }
        let mut resp = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"redrive\""),
            );
        }
        resp
    }
}

/// What a route handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_errors_keep_their_message_and_get_a_status() {
        for (e, status, code) in [
            (Error::Usage("bad".into()), 400, "invalid_request"),
            (Error::NotFound("x".into()), 404, "not_found"),
            (Error::Refused("no".into()), 409, "refused"),
            (Error::FleetDown("down".into()), 503, "fleet_down"),
            (Error::Timeout("slow".into()), 504, "timeout"),
            (Error::Config("c".into()), 500, "internal"),
        ] {
            let msg = e.message();
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.code), (status, code));
            assert_eq!(a.message, msg);
        }
    }

    #[test]
    fn unauthorized_answers_say_bearer() {
        let r = ApiError::unauthorized("who are you").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer realm=\"redrive\""
        );
    }
}
