//! Who may use the operator routes: the console's and the hand-off API's
//! (`crate::dialog::operator`). They show customers' numbers, transcripts and
//! replies, so they need the operator token on every address, loopback
//! included (a reverse proxy on the same machine reaches a loopback bind on
//! behalf of anyone), unless `[service] console_open = true` says otherwise.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// What a closed console and API say, with how to open them.
pub const CLOSED_MESSAGE: &str = "The operator console and API are closed: no operator token is \
configured. Set [service] operator_token (or VOXLINE_OPERATOR_TOKEN) and open \
/console?token=<token>, or set [service] console_open = true to let anyone who reaches this \
address in.\n";

/// What a request without the right token is told.
pub const TOKEN_MESSAGE: &str = "The operator console and API need the operator token: \
Authorization: Bearer <token>, or open /console?token=<token>.\n";

/// Who may use the operator routes.
#[derive(Clone)]
pub enum OperatorAccess {
    /// `console_open = true`: anyone who reaches the address.
    Open,
    /// No token and not open: every request is refused with
    /// [`CLOSED_MESSAGE`].
    Closed,
    /// Every request carries this token, compared in constant time.
    Token(Arc<str>),
}

impl std::fmt::Debug for OperatorAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Open => "Open",
            Self::Closed => "Closed",
            Self::Token(_) => "Token(***)",
        })
    }
}

impl OperatorAccess {
    /// From `[service] operator_token` (an empty one counts as none) and
    /// `[service] console_open`, which wins over a token.
    pub fn new(token: Option<&str>, open: bool) -> Self {
        match token.filter(|t| !t.is_empty()) {
            _ if open => Self::Open,
            Some(t) => Self::Token(Arc::from(t)),
            None => Self::Closed,
        }
    }

    /// Lets a request through that carried `given` (its bearer token, if
    /// any), or says why not.
    pub fn admit(&self, given: Option<&str>) -> Result<(), Refusal> {
        match self {
            Self::Open => Ok(()),
            Self::Closed => Err(Refusal::Closed),
            Self::Token(token) => {
                let given = given.unwrap_or_default();
                if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                    Ok(())
                } else {
                    Err(Refusal::NeedsToken)
                }
            }
        }
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403 with [`CLOSED_MESSAGE`].
    Closed,
    /// 401 with [`TOKEN_MESSAGE`].
    NeedsToken,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Closed => (StatusCode::FORBIDDEN, CLOSED_MESSAGE).into_response(),
            Self::NeedsToken => (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"voxline operator\"",
                )],
                TOKEN_MESSAGE,
            )
                .into_response(),
        }
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// A middleware for routes that take the token from the header only.
pub async fn require_bearer(
    State(access): State<OperatorAccess>,
    req: Request,
    next: Next,
) -> Response {
    match access.admit(bearer(req.headers())) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_needed_unless_open_is_said() {
        assert!(matches!(
            OperatorAccess::new(None, false),
            OperatorAccess::Closed
        ));
        assert!(matches!(
            OperatorAccess::new(Some(""), false),
            OperatorAccess::Closed
        ));
        assert!(matches!(
            OperatorAccess::new(Some("t"), false),
            OperatorAccess::Token(_)
        ));
        assert!(matches!(
            OperatorAccess::new(None, true),
            OperatorAccess::Open
        ));
        assert!(matches!(
            OperatorAccess::new(Some("t"), true),
            OperatorAccess::Open
        ));

        let closed = OperatorAccess::new(None, false);
        assert_eq!(closed.admit(Some("t")), Err(Refusal::Closed));
        assert_eq!(Refusal::Closed.into_response().status(), 403);
        let token = OperatorAccess::new(Some("t"), false);
        assert!(token.admit(Some("t")).is_ok());
        assert_eq!(token.admit(None), Err(Refusal::NeedsToken));
        assert_eq!(token.admit(Some("u")), Err(Refusal::NeedsToken));
        assert_eq!(Refusal::NeedsToken.into_response().status(), 401);
        assert!(OperatorAccess::new(None, true).admit(None).is_ok());
        assert_eq!(
            format!("{:?}", OperatorAccess::new(Some("secret"), false)),
            "Token(***)"
        );
    }
}
