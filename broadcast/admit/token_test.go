package admit

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// The token's expiry reaches the Ticket: exp plus the leeway admission
// allows, in unix nanoseconds.
func TestTicketExpires(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	a := newController(t, Config{Authenticate: JWTAuthenticator([]byte("s3cret"), JWTAudience("fanout"))})
	tk, authErr, refusal := a.Admit(&Request{Token: sign(t, jwt.MapClaims{"exp": exp.Unix(), "aud": "fanout"})})
	if refusal != nil {
		t.Fatalf("refused: %v (%v)", refusal, authErr)
	}
	if got, want := tk.Expires(), exp.Add(JWTLeeway).UnixNano(); got != want {
		t.Fatalf("Expires() = %d, want %d (exp + leeway)", got, want)
	}
	a.Release(tk)

	// Within the leeway, a token is admitted, and its connection has
	// until the end of the leeway, not a past instant.
	late := time.Now().Add(-JWTLeeway / 2).Truncate(time.Second)
	tk, _, refusal = a.Admit(&Request{Token: sign(t, jwt.MapClaims{"exp": late.Unix(), "aud": "fanout"})})
	if refusal != nil || tk.Expires() <= time.Now().UnixNano() {
		t.Fatalf("token in its leeway: %v, expires %d", refusal, tk.Expires())
	}
	a.Release(tk)

	for name, cfg := range map[string]Config{
		"no auth":              {},
		"token without expiry": {Authenticate: func(string) (Grant, error) { return Grant{}, nil }},
	} {
		tk, _, refusal := newController(t, cfg).Admit(&Request{Token: "x"})
		if refusal != nil || tk.Expires() != 0 {
			t.Errorf("%s: %v, Expires() = %d, want 0 (never)", name, refusal, tk.Expires())
		}
	}
}

func TestJWTAuthenticatorRefusals(t *testing.T) {
	auth := JWTAuthenticator([]byte("s3cret"), JWTAudience("fanout"), JWTIssuer("https://auth.example"))
	exp := time.Now().Add(time.Hour).Unix()
	for name, tc := range map[string]struct {
		token string
		want  error // a jwt sentinel the error wraps; nil for any error
	}{
		"empty":     {"", nil},
		"no exp":    {sign(t, jwt.MapClaims{"aud": "fanout", "iss": "https://auth.example"}), jwt.ErrTokenRequiredClaimMissing},
		"expired":   {sign(t, jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix(), "aud": "fanout", "iss": "https://auth.example"}), jwt.ErrTokenExpired},
		"wrong aud": {sign(t, jwt.MapClaims{"exp": exp, "aud": "api", "iss": "https://auth.example"}), jwt.ErrTokenInvalidAudience},
		"wrong iss": {sign(t, jwt.MapClaims{"exp": exp, "aud": "fanout", "iss": "https://evil.example"}), jwt.ErrTokenInvalidIssuer},
		"not yet":   {sign(t, jwt.MapClaims{"exp": exp, "nbf": time.Now().Add(time.Hour).Unix(), "aud": "fanout", "iss": "https://auth.example"}), jwt.ErrTokenNotValidYet},
		"none alg":  {"eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDB9.", jwt.ErrTokenSignatureInvalid},
	} {
		_, err := auth(tc.token)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}
