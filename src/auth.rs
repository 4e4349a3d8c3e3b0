//! Tokens: minting and verifying HS256 JWTs, scopes, and game patterns.
//!
//! A token carries `sub` (who, recorded in the audit trail), `exp`/`iat`/`nbf`
//! (when), `scope` (`scorekeeper` or `admin`) and `games`: the patterns it may
//! write. A pattern is `*` (every game), `league:*` (every game of exactly that
//! league) or one exact game id. Patterns are validated when a token is minted
//! *and* when it is verified, so matching never has to deal with junk.
//!
//! Verification accepts HS256 only: the algorithm is pinned, so `alg: none` and
//! other algorithms are refused before any signature check. Errors are sentences
//! with the fix; they never contain the secret or the token.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::id::{GameId, IdError, League};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// Longest accepted `sub`, in characters.
pub const MAX_SUB_CHARS: usize = 128;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// May write the games its patterns match.
    Scorekeeper,
    /// May write every game.
    Admin,
}

/// The claims of a scorehub token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token is for; recorded as `by` on every event it posts.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issue time, Unix seconds; optional (the contract does not require
    /// it, and nothing checks it), 0 when absent.
    #[serde(default)]
    pub iat: u64,
    /// Not valid before, Unix seconds (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// What the token may do.
    pub scope: Scope,
    /// Game patterns it may write: `*`, `league:*` or exact game ids.
    pub games: Vec<String>,
}

impl Claims {
    /// Whether this token may write `game`. Admin: any game. Scorekeeper: a
    /// pattern is the exact id, or `league:*` for exactly the game's league, or `*`.
    pub fn may_write(&self, game: &GameId) -> bool {
        match self.scope {
            Scope::Admin => true,
            Scope::Scorekeeper => self.games.iter().any(|p| pattern_matches(p, game)),
        }
    }

    /// [`Claims::may_write`] as a `Result`, with a [`AuthError::Forbidden`] that says why.
    pub fn check_write(&self, game: &GameId) -> Result<(), AuthError> {
        if self.may_write(game) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                game: game.to_string(),
            })
        }
    }
}

/// Whether one (validated) pattern matches `game`.
fn pattern_matches(pattern: &str, game: &GameId) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(":*") {
        Some(league) => league == game.league_str(),
        None => pattern == game.as_str(),
    }
}

/// A claim a token may not carry (or be minted with).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A games pattern that is neither `*`, `league:*` nor a game id.
    #[error(
        "games pattern {pattern:?} is invalid: {source} (use a game id such as `nba:2026-11-22-lal-bos`, `nba:*` for a league, or `*`)"
    )]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with its league or game id.
        source: IdError,
    },
    /// An empty `sub`.
    #[error("sub is empty (name who the token is for, e.g. `--sub alice`)")]
    EmptySub,
    /// A `sub` longer than [`MAX_SUB_CHARS`].
    #[error("sub is longer than {MAX_SUB_CHARS} characters")]
    LongSub,
    /// A `sub` with control characters.
    #[error("sub contains control characters")]
    ControlInSub,
}

/// Checks a game pattern: `*`, `league:*` with a valid league, or a valid game id.
pub fn validate_pattern(p: &str) -> Result<(), ClaimError> {
    if p == "*" {
        return Ok(());
    }
    let checked = match p.strip_suffix(":*") {
        Some(league) => League::parse(league).map(drop),
        None => GameId::parse(p).map(drop),
    };
    checked.map_err(|source| ClaimError::Pattern {
        pattern: p.to_owned(),
        source,
    })
}

/// Checks `sub`: 1 to [`MAX_SUB_CHARS`] characters, no control characters.
fn validate_sub(sub: &str) -> Result<(), ClaimError> {
    if sub.is_empty() {
        return Err(ClaimError::EmptySub);
    }
    if sub.chars().count() > MAX_SUB_CHARS {
        return Err(ClaimError::LongSub);
    }
    if sub.chars().any(char::is_control) {
        return Err(ClaimError::ControlInSub);
    }
    Ok(())
}

/// Why a token was refused (or could not be minted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was sent.
    #[error("no token: send `Authorization: Bearer <token>` (mint one with `scorehub token`)")]
    Missing,
    /// An `Authorization` header with another scheme than `Bearer`.
    #[error("the Authorization header must read `Bearer <token>`")]
    NotBearer,
    /// Not a well-formed JWT.
    #[error(
        "the token is not a well-formed HS256 JWT; send it exactly as `scorehub token` printed it"
    )]
    Malformed,
    /// Signed with an algorithm other than HS256 (or `none`).
    #[error(
        "the token is not signed with HS256, the only accepted algorithm; mint one with `scorehub token`"
    )]
    UnsupportedAlgorithm,
    /// `exp` has passed.
    #[error("the token has expired; mint a new one with `scorehub token`")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet (its nbf is in the future); wait, or check the clocks")]
    NotYetValid,
    /// The signature does not match this hub's secret.
    #[error(
        "the token signature does not match: it was minted with another secret than this hub's auth.secret"
    )]
    BadSignature,
    /// Signature fine, but the claims are missing or invalid.
    #[error("the token's claims are invalid: {0}; mint a new one with `scorehub token`")]
    BadClaims(String),
    /// A valid token whose patterns do not cover the game.
    #[error(
        "this token may not write game {game}; use a token whose games include it (an exact id, its `league:*`, or `*`)"
    )]
    Forbidden {
        /// The game that was refused.
        game: String,
    },
    /// `mint` was given bad input (sub, patterns, ttl).
    #[error("cannot mint the token: {0}")]
    MintRefused(String),
}

impl AuthError {
    /// The API error code: `unauthorized` (401) for token problems, `forbidden`
    /// (403) for [`AuthError::Forbidden`], `bad_request` for [`AuthError::MintRefused`].
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::MintRefused(_) => "bad_request",
            _ => "unauthorized",
        }
    }

    /// The HTTP status that goes with [`AuthError::code`].
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Forbidden { .. } => 403,
            AuthError::MintRefused(_) => 400,
            _ => 401,
        }
    }

    fn from_jwt(e: &jsonwebtoken::errors::Error) -> AuthError {
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => AuthError::UnsupportedAlgorithm,
            ErrorKind::MissingRequiredClaim(c) => {
                AuthError::BadClaims(format!("the {c} claim is missing"))
            }
            ErrorKind::InvalidClaimFormat(c) => {
                AuthError::BadClaims(format!("the {c} claim is malformed"))
            }
            ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
                AuthError::BadClaims(
                    "it carries an aud, iss or sub this hub does not accept".into(),
                )
            }
            // The header parsed already (see `verify`), so JSON trouble is in the claims.
            ErrorKind::Json(e) => AuthError::BadClaims(e.to_string()),
            _ => AuthError::Malformed,
        }
    }
}

/// Extracts the token from an `Authorization` header value: `Bearer <token>`,
/// scheme case-insensitive.
pub fn parse_bearer(header_value: &str) -> Result<&str, AuthError> {
    let value = header_value.trim();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, token) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.contains(char::is_whitespace) {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Mints and verifies HS256 tokens with one secret.
#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("algorithm", &Algorithm::HS256)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// An authority for `secret`; the caller guarantees it is at least 32 bytes
    /// (the config validates `auth.secret`; [`Auth::generate_secret`] makes 64).
    pub fn new(secret: &[u8]) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A fresh secret: 32 bytes from a CSPRNG as 64 lowercase hex characters.
    pub fn generate_secret() -> String {
        use rand::Rng;
        use std::fmt::Write;

        fn csprng() -> impl rand::CryptoRng {
            rand::rng()
        }
        let mut bytes = [0u8; 32];
        csprng().fill_bytes(&mut bytes);
        let mut hex = String::with_capacity(64);
        for b in bytes {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    /// Signs a token for `sub` valid for `ttl` (at least one second) from now.
    /// Refuses an invalid `sub`, invalid patterns, or a scorekeeper token with no games.
    pub fn mint(
        &self,
        sub: &str,
        scope: Scope,
        games: Vec<String>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        validate_sub(sub).map_err(|e| AuthError::MintRefused(e.to_string()))?;
        for p in &games {
            validate_pattern(p).map_err(|e| AuthError::MintRefused(e.to_string()))?;
        }
        if scope == Scope::Scorekeeper && games.is_empty() {
            return Err(AuthError::MintRefused(
                "a scorekeeper token needs at least one game pattern (e.g. `--games 'nba:*'`)"
                    .into(),
            ));
        }
        if ttl.as_secs() == 0 {
            return Err(AuthError::MintRefused(
                "ttl must be at least one second (e.g. `--ttl 8h`)".into(),
            ));
        }
        let iat = jsonwebtoken::get_current_timestamp();
        let exp = iat
            .checked_add(ttl.as_secs())
            .ok_or_else(|| AuthError::MintRefused("ttl is too long".into()))?;
        let claims = Claims {
            sub: sub.to_owned(),
            exp,
            iat,
            nbf: None,
            scope,
            games,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::MintRefused(format!("signing failed: {e}")))
    }

    /// Verifies signature (HS256 only), `exp` (required), `nbf` (when present),
    /// with [`LEEWAY_SECS`] of leeway, then the claims themselves.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        // Parse the header on its own first, so that JSON errors later can only
        // come from the claims. An unknown `alg` such as `none` fails here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::from_jwt(&e))?;
        let claims = data.claims;
        validate_sub(&claims.sub).map_err(|e| AuthError::BadClaims(e.to_string()))?;
        for p in &claims.games {
            validate_pattern(p).map_err(|e| AuthError::BadClaims(e.to_string()))?;
        }
        Ok(claims)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(scope: Scope, games: &[&str]) -> Claims {
        Claims {
            sub: "alice".into(),
            exp: now() + 3600,
            iat: now(),
            nbf: None,
            scope,
            games: games.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn sign<T: Serialize>(alg: Algorithm, secret: &[u8], claims: &T) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn b64(s: &str) -> String {
        // Tiny URL-safe, unpadded base64 encoder for hand-built tokens.
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn id(s: &str) -> GameId {
        GameId::parse(s).unwrap()
    }

    #[test]
    fn mint_verify_round_trip() {
        let auth = Auth::new(SECRET);
        let token = auth
            .mint(
                "alice",
                Scope::Scorekeeper,
                vec!["nba:*".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let c = auth.verify(&token).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.scope, Scope::Scorekeeper);
        assert_eq!(c.games, vec!["nba:*".to_string()]);
        assert_eq!(c.exp, c.iat + 60);
        assert_eq!(c.nbf, None);
        assert!(c.may_write(&id("nba:1")));
        assert!(!c.may_write(&id("nhl:1")));
    }

    #[test]
    fn scope_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&Scope::Scorekeeper).unwrap(),
            "\"scorekeeper\""
        );
        assert_eq!(serde_json::to_string(&Scope::Admin).unwrap(), "\"admin\"");
    }

    #[test]
    fn expired_token_is_refused() {
        let auth = Auth::new(SECRET);
        let mut c = claims(Scope::Admin, &["*"]);
        c.iat = now() - 3600;
        c.exp = now() - 60; // well past the 5 s leeway
        let err = auth
            .verify(&sign(Algorithm::HS256, SECRET, &c))
            .unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.code(), "unauthorized");
    }

    #[test]
    fn wrong_secret_is_bad_signature() {
        let other = Auth::new(b"another-secret-another-secret-xx");
        let token = other
            .mint("alice", Scope::Admin, vec![], Duration::from_secs(60))
            .unwrap();
        let err = Auth::new(SECRET).verify(&token).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        let msg = err.to_string();
        assert!(!msg.contains(std::str::from_utf8(SECRET).unwrap()));
        assert!(!msg.contains(&token));
    }

    #[test]
    fn alg_none_is_refused() {
        let auth = Auth::new(SECRET);
        let payload = serde_json::to_string(&claims(Scope::Admin, &["*"])).unwrap();
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let token = format!("{}.{}.", b64(header), b64(&payload));
            let err = auth.verify(&token).unwrap_err();
            assert!(
                matches!(err, AuthError::Malformed | AuthError::UnsupportedAlgorithm),
                "{header}: {err:?}"
            );
        }
    }

    #[test]
    fn other_hmac_algorithms_are_refused() {
        let auth = Auth::new(SECRET);
        let c = claims(Scope::Admin, &["*"]);
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let err = auth.verify(&sign(alg, SECRET, &c)).unwrap_err();
            assert_eq!(err, AuthError::UnsupportedAlgorithm, "{alg:?}");
        }
    }

    #[test]
    fn tampered_payload_is_refused() {
        let auth = Auth::new(SECRET);
        let token = auth
            .mint(
                "alice",
                Scope::Scorekeeper,
                vec!["nba:1".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(Scope::Admin, &["*"]);
        forged.sub = "alice".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_string(&forged).unwrap()),
            parts[2]
        );
        assert_eq!(auth.verify(&forged).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn nbf_is_honoured_with_leeway() {
        let auth = Auth::new(SECRET);
        let mut c = claims(Scope::Admin, &["*"]);
        c.nbf = Some(now() + 600);
        assert_eq!(
            auth.verify(&sign(Algorithm::HS256, SECRET, &c))
                .unwrap_err(),
            AuthError::NotYetValid
        );
        c.nbf = Some(now() + 2); // inside the 5 s leeway
        assert!(auth.verify(&sign(Algorithm::HS256, SECRET, &c)).is_ok());
        c.nbf = Some(now() - 10);
        assert!(auth.verify(&sign(Algorithm::HS256, SECRET, &c)).is_ok());
    }

    #[test]
    fn missing_claims_are_refused() {
        let auth = Auth::new(SECRET);
        let base = serde_json::to_value(claims(Scope::Scorekeeper, &["nba:*"])).unwrap();
        for field in ["games", "scope", "exp", "sub"] {
            let mut v = base.clone();
            v.as_object_mut().unwrap().remove(field);
            let err = auth
                .verify(&sign(Algorithm::HS256, SECRET, &v))
                .unwrap_err();
            assert!(matches!(err, AuthError::BadClaims(_)), "{field}: {err:?}");
            assert_eq!(err.code(), "unauthorized");
        }
        // `iat` is optional: the contract does not ask for it.
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("iat");
        assert!(auth.verify(&sign(Algorithm::HS256, SECRET, &v)).is_ok());
        let mut v = base.clone();
        v["scope"] = "root".into();
        assert!(matches!(
            auth.verify(&sign(Algorithm::HS256, SECRET, &v)),
            Err(AuthError::BadClaims(_))
        ));
    }

    #[test]
    fn invalid_patterns_in_a_token_are_refused() {
        let auth = Auth::new(SECRET);
        let c = claims(Scope::Scorekeeper, &["NBA:*"]);
        assert!(matches!(
            auth.verify(&sign(Algorithm::HS256, SECRET, &c)),
            Err(AuthError::BadClaims(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        let auth = Auth::new(SECRET);
        for t in ["", "abc", "a.b.c", "a.b", "..."] {
            assert_eq!(auth.verify(t).unwrap_err(), AuthError::Malformed, "{t:?}");
        }
    }

    #[test]
    fn pattern_matching_table() {
        let table: &[(&str, &str, bool)] = &[
            ("nba:*", "nba:2026-11-22-lal-bos", true),
            ("nba:*", "nbax:1", false),
            ("nba:*", "nb:1", false),
            ("nbax:*", "nba:1", false),
            ("nba:1", "nba:1", true),
            ("nba:1", "nba:10", false),
            ("nba:10", "nba:1", false),
            ("nba:1", "nhl:1", false),
            ("*", "anything:goes", true),
        ];
        for (pattern, game, expected) in table {
            let c = claims(Scope::Scorekeeper, &[pattern]);
            assert_eq!(c.may_write(&id(game)), *expected, "{pattern} vs {game}");
            assert_eq!(c.check_write(&id(game)).is_ok(), *expected);
        }
        let none = claims(Scope::Scorekeeper, &[]);
        assert!(!none.may_write(&id("nba:1")));
        let several = claims(Scope::Scorekeeper, &["nhl:*", "nba:7"]);
        assert!(several.may_write(&id("nba:7")) && several.may_write(&id("nhl:x")));
        assert!(!several.may_write(&id("nba:8")));
        let err = several.check_write(&id("nba:8")).unwrap_err();
        assert_eq!((err.code(), err.http_status()), ("forbidden", 403));
    }

    #[test]
    fn admin_may_write_anything() {
        let admin = claims(Scope::Admin, &[]);
        assert!(admin.may_write(&id("nba:1")));
        assert!(admin.may_write(&id("zz:whatever")));
    }

    #[test]
    fn validate_pattern_accepts_and_refuses() {
        for ok in ["*", "nba:*", "nba:2026-11-22-lal-bos", "a-b_c:X.y"] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "nba", "NBA:*", "nba:**", "*:*", "nba:a b", ":*", "nba:*x", "**",
        ] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mint_refuses_bad_input() {
        let auth = Auth::new(SECRET);
        let ttl = Duration::from_secs(60);
        let bad = [
            auth.mint("alice", Scope::Scorekeeper, vec!["nba".into()], ttl),
            auth.mint("alice", Scope::Scorekeeper, vec![], ttl),
            auth.mint("", Scope::Admin, vec![], ttl),
            auth.mint("a\nb", Scope::Admin, vec![], ttl),
            auth.mint("alice", Scope::Admin, vec![], Duration::from_millis(10)),
        ];
        for r in bad {
            assert!(matches!(r, Err(AuthError::MintRefused(_))), "{r:?}");
        }
    }

    #[test]
    fn parse_bearer_cases() {
        assert_eq!(parse_bearer("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(parse_bearer("bearer   abc "), Ok("abc"));
        assert_eq!(parse_bearer("BEARER abc"), Ok("abc"));
        assert_eq!(parse_bearer(""), Err(AuthError::Missing));
        assert_eq!(parse_bearer("Bearer"), Err(AuthError::Missing));
        assert_eq!(parse_bearer("Bearer  "), Err(AuthError::Missing));
        assert_eq!(
            parse_bearer("Basic dXNlcjpwYXNz"),
            Err(AuthError::NotBearer)
        );
        assert_eq!(parse_bearer("Bearer a b"), Err(AuthError::Malformed));
    }

    #[test]
    fn generated_secrets_are_hex_and_distinct() {
        let a = Auth::generate_secret();
        let b = Auth::generate_secret();
        assert_eq!(a.len(), 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn debug_hides_the_keys() {
        let dbg = format!("{:?}", Auth::new(SECRET));
        assert!(!dbg.contains("0123456789"), "{dbg}");
    }
}
