//! Reading a request's input, with the API's JSON errors instead of axum's plain-text
//! rejections: query parameters ([`Params`]: repeated keys are alternatives, an unknown key is
//! an error), a JSON body ([`Body`], at most [`MAX_BODY`] bytes) and path segments
//! ([`PathArgs`]).

use std::collections::BTreeSet;
use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};

/// The largest request body read, bytes; a larger one is refused (413) before it is parsed.
pub const MAX_BODY: usize = 1024 * 1024;
/// How much of a refused body is still read (and dropped) before the answer, so that a client
/// still sending it gets the 413 instead of a connection closed under it; a body larger than
/// this gets the answer as soon as it is known, and the connection is closed.
pub const DRAIN_MAX: u64 = 8 * 1024 * 1024;

/// A request's query parameters. Routes ask for the names they take; [`Params::finish`] then
/// refuses any other, so a misspelt filter is an error rather than silently ignored.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    asked: BTreeSet<&'static str>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params, ApiError> {
        Ok(Params::parse(parts.uri.query().unwrap_or("")))
    }
}

impl Params {
    /// Parses `a=1&b=2&a=3` (percent-decoded; `+` is a space).
    pub fn parse(query: &str) -> Params {
        Params {
            pairs: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            asked: BTreeSet::new(),
        }
    }

    /// Every value of `name`, in order (a repeated key gives alternatives).
    pub fn all(&mut self, name: &'static str) -> Vec<String> {
        self.asked.insert(name);
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The one value of `name`, if given; 400 when it is given twice.
    pub fn one(&mut self, name: &'static str) -> ApiResult<Option<String>> {
        let mut all = self.all(name);
        if all.len() > 1 {
            return Err(ApiError::bad_request(format!(
                "query parameter '{name}' is given {} times; give it once",
                all.len()
            )));
        }
        Ok(all.pop())
    }

    /// The number `name` (`default` when absent) between `min` and `max`.
    pub fn number<T>(&mut self, name: &'static str, default: T, min: T, max: T) -> ApiResult<T>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(text) = self.one(name)? else {
            return Ok(default);
        };
        match text.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "query parameter '{name}' = '{text}' must be a whole number between {min} and {max}"
            ))),
        }
    }

    /// 400 when the query holds a parameter the route did not ask for.
    pub fn finish(&self) -> ApiResult<()> {
        if let Some((k, _)) = self
            .pairs
            .iter()
            .find(|(k, _)| !self.asked.contains(k.as_str()))
        {
            let known: Vec<&str> = self.asked.iter().copied().collect();
            return Err(ApiError::bad_request(format!(
                "unknown query parameter '{k}'; this route takes {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(())
    }
}

/// A JSON request body. An empty body reads as `{}` (every field at its default); a body that
/// is not JSON of the expected shape is a 400 naming what is wrong, a body over [`MAX_BODY`]
/// a 413 (read to its end first when not over [`DRAIN_MAX`], so the client sending it gets
/// the answer), another content type than JSON a 415.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Body<T>, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {MAX_BODY} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let json_type = req.headers().get(header::CONTENT_TYPE).map(|v| {
            v.to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
        let mut body = req.into_body();
        if declared.is_some_and(|n| n > DRAIN_MAX) {
            return Err(too_large());
        }
        let mut bytes: Vec<u8> = Vec::new();
        let mut read: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request(format!("the request body could not be read: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            read += data.len() as u64;
            if read > DRAIN_MAX {
                return Err(too_large());
            }
            if read <= MAX_BODY as u64 {
                bytes.extend_from_slice(&data);
            }
        }
        if read > MAX_BODY as u64 {
            return Err(too_large());
        }
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            if json_type == Some(false) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the request body must be JSON (Content-Type: application/json)",
                ));
            }
            &bytes
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("the request body does not read: {e}")))
    }
}

/// Path segments (percent-decoded), or a 400 saying which did not read.
#[derive(Debug)]
pub struct PathArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathArgs<T>, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| PathArgs(t))
            .map_err(|e| {
                ApiError::bad_request(format!("the path does not read: {}", e.body_text()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_alternatives_and_unknown_keys_are_refused() {
        let mut p = Params::parse("class=a&class=b%20c&limit=5&tenant=x+y");
        assert_eq!(p.all("class"), vec!["a", "b c"]);
        assert_eq!(p.number("limit", 50usize, 1, 100).unwrap(), 5);
        assert_eq!(p.one("tenant").unwrap().as_deref(), Some("x y"));
        p.finish().unwrap();
        let mut p = Params::parse("limit=0&colour=red");
        assert!(p
            .number("limit", 50usize, 1, 100)
            .unwrap_err()
            .message
            .contains("between 1 and 100"));
        let e = p.finish().unwrap_err();
        assert_eq!(
            e.message,
            "unknown query parameter 'colour'; this route takes limit"
        );
        let mut p = Params::parse("cursor=a&cursor=b");
        assert!(p.one("cursor").unwrap_err().message.contains("2 times"));
    }
}
