package email

// What the tests of package email_test check the approval page against.
const (
	CSRFCookieName = csrfCookie
	StyleSheetPath = stylePath
)

// ValidLinkToken reports whether a link token has the shape of one the
// authenticator makes (256 bits of base64url).
var ValidLinkToken = validToken
