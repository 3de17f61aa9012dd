package admit

import (
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTAuthenticator returns a Config.Authenticate that accepts HS256 JSON
// Web Tokens signed with secret. Expiry (exp) and not-before (nbf) are
// checked when present, with 30 seconds of clock skew allowed.
func JWTAuthenticator(secret []byte) func(token string) error {
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithLeeway(30*time.Second))
	key := func(*jwt.Token) (any, error) { return secret, nil }
	return func(token string) error {
		if token == "" {
			return errors.New("no token")
		}
		if _, err := parser.Parse(token, key); err != nil {
			return err
		}
		return nil
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
