package admit

import (
	"encoding/json"
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
// checks. The expiry it grants is exp plus the leeway: the instant the
// same token would stop being admitted, so that a connection closed for
// its token then ends as the token does. A "channels" claim (an array of
// channel names) limits the connection to those channels.
func JWTAuthenticator(secret []byte, opts ...JWTOption) func(token string) (Grant, error) {
	po := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithLeeway(JWTLeeway), jwt.WithExpirationRequired()}
	for _, o := range opts {
		po = append(po, o.opt)
	}
	parser := jwt.NewParser(po...)
	key := func(*jwt.Token) (any, error) { return secret, nil }
	return func(token string) (Grant, error) {
		if token == "" {
			return Grant{}, errors.New("no token")
		}
		var claims channelClaims
		t, err := parser.ParseWithClaims(token, &claims, key)
		if err != nil {
			return Grant{}, err
		}
		exp, err := t.Claims.GetExpirationTime()
		if err != nil || exp == nil { // the parser already required it
			return Grant{}, errors.New("token has no expiry")
		}
		if claims.Channels != nil && claims.Channels.list == nil {
			claims.Channels.list = []string{} // "channels": []: none granted
		}
		g := Grant{Expires: exp.Add(JWTLeeway)}
		if claims.Channels != nil {
			g.Channels = claims.Channels.list
		}
		return g, nil
	}
}

// channelClaims are the registered claims plus fanout's "channels".
type channelClaims struct {
	jwt.RegisteredClaims
	Channels *channelList `json:"channels,omitempty"`
}

// channelList is the "channels" claim: an array of strings; anything else
// makes the token invalid.
type channelList struct{ list []string }

func (c *channelList) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &c.list); err != nil {
		return errors.New(`"channels" claim is not an array of strings`)
	}
	return nil
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
