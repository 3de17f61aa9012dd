package admit

import (
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTLeeway is the clock skew JWTAuthenticator allows between the token's
// issuer and this server, on exp and nbf.
const JWTLeeway = 30 * time.Second

// JWTOption adds a check to JWTAuthenticator.
type JWTOption struct{ opt jwt.ParserOption }

// JWTAudience makes JWTAuthenticator require the token's aud claim to be,
// or to list, aud.
func JWTAudience(aud string) JWTOption { return JWTOption{jwt.WithAudience(aud)} }

// JWTIssuer makes JWTAuthenticator require the token's iss claim to be
// iss.
func JWTIssuer(iss string) JWTOption { return JWTOption{jwt.WithIssuer(iss)} }

// JWTAuthenticator returns a Config.Authenticate that accepts HS256 JSON
// Web Tokens signed with secret. Expiry (exp) is required: a token without
// it would be good forever. exp and not-before (nbf, when present) are
// checked with JWTLeeway of clock skew; opts add audience and issuer
// checks. The expiry it returns is exp plus the leeway: the instant the
// same token would stop being admitted, so that a connection closed for
// its token then ends as the token does.
func JWTAuthenticator(secret []byte, opts ...JWTOption) func(token string) (time.Time, error) {
	po := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithLeeway(JWTLeeway), jwt.WithExpirationRequired()}
	for _, o := range opts {
		po = append(po, o.opt)
	}
	parser := jwt.NewParser(po...)
	key := func(*jwt.Token) (any, error) { return secret, nil }
	return func(token string) (time.Time, error) {
		if token == "" {
			return time.Time{}, errors.New("no token")
		}
		t, err := parser.Parse(token, key)
		if err != nil {
			return time.Time{}, err
		}
		exp, err := t.Claims.GetExpirationTime()
		if err != nil || exp == nil { // the parser already required it
			return time.Time{}, errors.New("token has no expiry")
		}
		return exp.Add(JWTLeeway), nil
	}
}

// Bearer extracts the token of an "Authorization: Bearer <token>" value;
// "" if it is not one.
func Bearer(v string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}
