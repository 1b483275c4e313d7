// Package cibaproxy adds OpenID Connect CIBA (Client Initiated Backchannel
// Authentication Core 1.0) in front of an OpenID provider that lacks it.
//
// A Server answers the backchannel authentication endpoint (CIBA Core §7)
// and the CIBA grant of the upstream's token endpoint (§10.1, §11), and
// serves the upstream's discovery document with the CIBA metadata added.
// It is the protocol core; each part it stands on is a package below it:
//
//   - store: the records and the interfaces of the engines that keep them
//     (store/badgerstore on disk), with the outbox worker (outbox) that
//     delivers what a transaction queued;
//   - authn: the authenticators that reach the user, who decides through
//     Server.Decide (authn/email mails a link, authn/httpchannel posts to a
//     device service);
//   - clients and users: who may ask, and for whom;
//   - upstream and issuer: the upstream's discovery, and the minting of
//     tokens there by token exchange of a subject token the proxy's own
//     issuer signs;
//   - ping, mail, metrics, oauth: notifications, SMTP, Prometheus
//     collectors, OAuth errors and forms.
//
// A Backend is what every site on one store shares across configuration
// reloads: the store, the polling state, the outbox worker, the rate
// limiters. The package imports nothing of Caddy; the caddymodule package
// wraps it as the http.handlers.ciba module.
package cibaproxy
