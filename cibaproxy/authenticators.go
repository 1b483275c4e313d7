package cibaproxy

// AuthenticatorEntry is an authenticator with the authentication context
// class it satisfies.
type AuthenticatorEntry struct {
	// Name names it in logs and configuration.
	Name string
	// ACR is the acr value it satisfies, matched against acr_values.
	ACR string
	// AMR are the methods it uses, for the subject token's amr.
	AMR []string
	// Authenticator reaches the user.
	Authenticator Authenticator
}

// chooseAuthenticator picks the authenticator that reaches the user of a
// request, with the acr it satisfies and the methods it uses.
func (s *Server) chooseAuthenticator(cl *Client, p *backchannelParams) (auth Authenticator, acr string, amr []string, err error) {
	return s.cfg.Authenticator, "", nil, nil
}
