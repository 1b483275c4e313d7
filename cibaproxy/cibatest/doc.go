// Package cibatest is the shared test kit of cibaproxy: real servers run in
// the test process in place of the outside world the proxy talks to (an
// SMTP server, the device service of the HTTP authentication channel, an
// upstream OpenID provider), clocks tests control, and free loopback
// addresses. It is an ordinary package so that the tests of every package
// of the module, the Caddy module and the end-to-end tests share one set of
// fakes.
//
// Every helper takes the test's testing.TB and registers its own cleanup.
//
// The kit imports authn/httpchannel (the device service decodes its
// requests). Tests of that package, or of a package it imports (oauth,
// store, outbox, authn, the internal packages), can therefore use the kit
// only from an external test package (package foo_test): an in-package
// test importing it would be an import cycle.
package cibatest
