// Package cibatest is the shared test kit of cibaproxy: real servers run in
// the test process in place of the outside world the proxy talks to (an
// SMTP server, the device service of the HTTP authentication channel, an
// upstream OpenID provider, a client's jwks_uri), clocks tests control,
// and free loopback addresses; and what the tests of several packages
// check alike: the keys of test clients and their JWK Sets, signing and
// verifying JWTs, the proxy's OAuth answers, a wait for what it does in
// the background, and its metrics read back. It is an ordinary package so
// that the tests of every package of the module, the Caddy module and the
// end-to-end tests share one set of fakes.
//
// Every helper takes the test's testing.TB and registers its own cleanup.
//
// The kit imports authn/httpchannel (the device service decodes its
// requests) and oauth (its errors are checked). Tests of those packages,
// or of a package httpchannel imports (store, outbox, authn, the internal
// packages), can therefore use the kit only from an external test package
// (package foo_test): an in-package test importing it would be an import
// cycle.
package cibatest
